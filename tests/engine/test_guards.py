"""Crash safety: atomic checkpoint files, finding the newest resume point, NaN stop."""
import os
import signal
import types
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.fileio import get_file_backend
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

import custom_modules  # noqa: F401  (registers the 'atomic_local' backend)
from custom_modules.engine.hooks import time_limit_hook
from custom_modules.fileio.atomic_local import AtomicLocalBackend
from toolkit.resume_policy import latest_resume_point
from custom_modules.engine.hooks.finite_loss_hook import FiniteLossHook
from helpers import REPO


MOCO = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py')
ATOMIC = dict(backend='atomic_local')  # what the training configs save checkpoints with


def _killed(*args, **kwargs):
    raise KeyboardInterrupt


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_2.pth'
    backend = get_file_backend(str(target), backend_args=ATOMIC)
    backend.put(b'complete checkpoint', str(target))
    assert target.read_bytes() == b'complete checkpoint'

    monkeypatch.setattr(os, 'fsync', _killed)  # the process dies half-way through writing
    with pytest.raises(KeyboardInterrupt):
        backend.put(b'new but never finished', str(target))
    assert target.read_bytes() == b'complete checkpoint'  # old file intact, no partial file
    assert sorted(os.listdir(tmp_path)) == ['epoch_2.pth']


def test_checkpoint_file_mode_follows_the_umask(tmp_path):
    """Files written through the backend get open()'s mode, not mkstemp's private 0600:
    teammates sharing a cluster project folder read each other's checkpoints."""
    old = os.umask(0o022)
    try:
        get_file_backend(backend_args=ATOMIC).put(b'x', str(tmp_path / 'epoch_1.pth'))
        with open(tmp_path / 'plain', 'wb'):
            pass
    finally:
        os.umask(old)
    mode = os.stat(tmp_path / 'epoch_1.pth').st_mode & 0o777
    assert mode == os.stat(tmp_path / 'plain').st_mode & 0o777 == 0o644


def _ckpt(path, iter_, epoch, resumable=True):
    ckpt = dict(meta=dict(epoch=epoch, iter=iter_, seed=0), state_dict={}, message_hub={})
    if resumable:
        ckpt.update(optimizer={}, param_schedulers=[])
    torch.save(ckpt, str(path))


def test_latest_resume_point_survives_a_lost_pointer(tmp_path):
    for n in (3, 4, 12):
        _ckpt(tmp_path / f'epoch_{n}.pth', iter_=10 * n, epoch=n)
    (tmp_path / 'iter_55.pth').write_bytes(b'truncated')  # never a resume point
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_4.pth'))
    assert latest_resume_point(str(tmp_path)) == str(tmp_path / 'epoch_4.pth')
    (tmp_path / 'last_checkpoint').write_text('')  # killed while the pointer was rewritten
    assert latest_resume_point(str(tmp_path)) == str(tmp_path / 'epoch_12.pth')
    _ckpt(tmp_path / 'iter_125.pth', iter_=125, epoch=12)  # a time-limit stop inside epoch 13
    assert latest_resume_point(str(tmp_path)) == str(tmp_path / 'iter_125.pth')
    assert latest_resume_point(str(tmp_path / 'missing')) is None


def test_weights_only_file_is_never_a_resume_point(tmp_path):
    _ckpt(tmp_path / 'epoch_100.pth', iter_=1000, epoch=100)
    _ckpt(tmp_path / 'keep_epoch_100.pth', iter_=1000, epoch=100, resumable=False)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'keep_epoch_100.pth'))
    assert latest_resume_point(str(tmp_path)) == str(tmp_path / 'epoch_100.pth')


class _Runner:
    iter, epoch, work_dir = 41, 2, '/w'


def test_nan_loss_stops_and_names_the_iteration():
    hook = FiniteLossHook()
    hook.after_train_iter(_Runner(), 0, outputs={'loss': torch.tensor(1.5)})
    with pytest.raises(FloatingPointError, match=r'iteration 42 \(epoch 3'):
        hook.after_train_iter(_Runner(), 0, outputs={'loss': torch.tensor(float('nan')),
                                                     'loss_cls': torch.tensor(float('inf'))})


def test_nan_loss_names_the_checkpoint_to_continue_and_bf16_for_an_fp16_run(tmp_path):
    from mmengine.optim import AmpOptimWrapper
    runner = types.SimpleNamespace(iter=9, epoch=0, work_dir=str(tmp_path), optim_wrapper=None)
    nan = {'loss': torch.tensor(float('nan'))}
    with pytest.raises(FloatingPointError, match=r'no checkpoint in .* yet: .*start again'):
        FiniteLossHook().after_train_iter(runner, 0, outputs=nan)
    last = str(tmp_path / 'epoch_3.pth')
    (tmp_path / 'last_checkpoint').write_text(last)
    with pytest.raises(FloatingPointError) as e:
        FiniteLossHook().after_train_iter(runner, 0, outputs=nan)
    assert f'continue it with --resume {last}.' in str(e.value) and 'bfloat16' not in str(e.value)
    runner.optim_wrapper = object.__new__(AmpOptimWrapper)  # mmengine's: float16 by default
    runner.optim_wrapper.cast_dtype = None
    with pytest.raises(FloatingPointError) as e:
        FiniteLossHook().after_train_iter(runner, 0, outputs=nan)
    assert f'--resume {last} --amp bf16 --allow-input-change' in str(e.value)
    runner.optim_wrapper.cast_dtype = torch.bfloat16
    with pytest.raises(FloatingPointError) as e:
        FiniteLossHook().after_train_iter(runner, 0, outputs=nan)
    assert '--amp bf16' not in str(e.value)


class _ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(1, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=self.fc(torch.stack(inputs)).pow(2).mean())


class _SignalAt(Hook):
    """Sends the time-limit signal (SIGUSR1) before the iteration ``at``."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_training_writes_every_checkpoint_through_the_atomic_backend(tmp_path, monkeypatch):
    """The pretraining config's checkpoint settings on a toy model: CheckpointHook's epoch_N.pth,
    KeepCheckpointHook's keep_epoch_N.pth and TimeLimitHook's iter_N.pth are all written by the
    atomic backend, and a kill while one is written leaves the last checkpoint as it was."""
    cfg = Config.fromfile(MOCO)
    hooks = {h['type']: h for h in cfg.custom_hooks}
    writes, put = [], AtomicLocalBackend.put

    def recorded_put(self, obj, filepath):
        writes.append(os.path.basename(filepath))
        if writes[-1].startswith('iter_'):  # the job dies while the time-limit save is written
            monkeypatch.setattr(os, 'fsync', _killed)
        return put(self, obj, filepath)
    monkeypatch.setattr(AtomicLocalBackend, 'put', recorded_put)
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    monkeypatch.setattr(time_limit_hook, '_stop_requested', 0)
    work = tmp_path / 'work'
    runner = Runner(
        model=_ToyModel(), work_dir=str(work), experiment_name=f'atomic-{uuid.uuid4().hex}',
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(1))] * 4, batch_size=2,
                              num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(checkpoint=cfg.default_hooks.checkpoint),
        custom_hooks=[hooks['TimeLimitHook'], dict(hooks['KeepCheckpointHook'], epochs=[2]),
                      _SignalAt(4)])  # 2 iterations per epoch: the first of epoch 3
    handlers = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.train()
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    assert writes == ['epoch_1.pth', 'keep_epoch_2.pth', 'epoch_2.pth', 'iter_5.pth']
    # no iter_5.pth and no temporary file: the interrupted write left nothing behind
    assert sorted(n for n in os.listdir(work) if n.endswith(('.pth', '.part'))) == [
        'epoch_1.pth', 'epoch_2.pth', 'keep_epoch_2.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_2.pth')
    assert torch.load(work / 'epoch_2.pth', weights_only=False)['meta']['epoch'] == 2
