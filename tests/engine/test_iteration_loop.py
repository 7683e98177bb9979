"""A schedule counted in iterations (ResumableIterBasedTrainLoop, the Soft Teacher stage's
180k config) keeps what the epoch loop gives: the time-limit stop, exact resume from any
checkpoint, timed saves beside CheckpointHook's, validations marked pending until they end,
and a finished run read as finished. A toy model whose loss draws from torch's RNG, on shuffled
data of 3 batches per pass over it."""
import os
import signal
import uuid

import pytest
import torch
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

import custom_modules  # noqa: F401  (registers the loop and the hooks)
from custom_modules.engine.hooks import time_limit_hook
from custom_modules.errors import UserError


class _NoisyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(1, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        x = torch.stack(inputs)
        out = self.fc(x + torch.randn_like(x))  # the model's own randomness (RoI sampling...)
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else list(out)


class _Count(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.append(len(data_samples))

    def compute_metrics(self, results):
        return dict(seen=sum(results))


class _Record(Hook):
    """Records each iteration's samples, each validation's iteration and length, and the
    checkpoint files after each iteration; sends SIGUSR1 before iteration ``signal_at``, or
    during the validation at iteration ``val_signal_at``, or ends the process there as kill -9
    does (``val_kill_at``)."""

    priority = 'LOWEST'  # after the iteration's checkpoints

    def __init__(self, signal_at=None, val_signal_at=None, val_kill_at=None):
        self.signal_at, self.val_signal_at, self.val_kill_at = signal_at, val_signal_at, val_kill_at
        self.batches, self.validations, self.files = {}, [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.batches[runner.iter] = [float(x) for x in data_batch['inputs']]
        if runner.iter == self.signal_at:
            os.kill(os.getpid(), signal.SIGUSR1)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.files.append(sorted(n for n in os.listdir(runner.work_dir) if n.endswith('.pth')))

    def before_val_epoch(self, runner):
        self.validations.append([runner.iter, 0])

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.validations[-1][1] += 1
        if batch_idx == 1 and runner.iter == self.val_signal_at:
            os.kill(os.getpid(), signal.SIGUSR1)
        if batch_idx == 1 and runner.iter == self.val_kill_at:
            raise KeyboardInterrupt


def iter_runner(work, record, max_iters=7, batch_size=2, ckpt_interval=2, val_interval=None,
                save_every_minutes=None, **kw):
    """6 samples, ``6 / batch_size`` batches per pass, the hooks and checkpoint settings of the
    180k Soft Teacher config (CheckpointHook by iteration, TimeLimitHook)."""
    from mmengine.dataset import DefaultSampler, pseudo_collate
    from torch.utils.data import DataLoader

    from custom_modules.datasets.samplers import ResumableBatchSampler
    data = [dict(inputs=torch.tensor([float(i)])) for i in range(6)]
    loader = DataLoader(data, collate_fn=pseudo_collate, batch_sampler=ResumableBatchSampler(
        DefaultSampler(data, shuffle=True, seed=3), batch_size))
    if val_interval:
        kw.update(val_cfg=dict(), val_evaluator=Evaluator(_Count()), val_dataloader=dict(
            dataset=data, batch_size=2, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False)))
    torch.manual_seed(0)  # the same initial weights in every run
    return Runner(
        model=_NoisyModel(), work_dir=str(work), experiment_name=f'iter-{uuid.uuid4().hex}',
        train_dataloader=loader, optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        param_scheduler=dict(type='MultiStepLR', by_epoch=False, milestones=[4]),
        train_cfg=dict(type='ResumableIterBasedTrainLoop', max_iters=max_iters,
                       val_interval=val_interval or 1000),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                           interval=ckpt_interval, max_keep_ckpts=3,
                                           backend_args=dict(backend='atomic_local'))),
        log_processor=dict(by_epoch=False), randomness=dict(seed=11),
        custom_hooks=[dict(type='TimeLimitHook', save_every_minutes=save_every_minutes),
                      record], **kw)


def _weights(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def _finished(work, max_iters):
    """tools/train.py's verdict on the folder's latest resume point."""
    import train
    from mmengine.config import Config
    from toolkit.resume_policy import _latest_resume_point
    path, meta = _latest_resume_point(str(work))
    return train.finished(Config(dict(train_cfg=dict(max_iters=max_iters), load_from=path)),
                          meta)


@pytest.fixture
def no_slurm(monkeypatch, signals_restored):
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)


def test_a_stop_and_a_periodic_checkpoint_both_resume_exactly(tmp_path, no_slurm):
    """Stopped by the time-limit signal in the second pass over the data, and resumed from
    CheckpointHook's iter_4.pth (saved without RNG state, inside that pass): both runs see the
    uninterrupted run's batches from there on and end with its weights."""
    whole = _Record()
    runner = iter_runner(tmp_path / 'whole', whole)
    runner.train()
    expected = _weights(runner)
    assert sorted(whole.batches) == list(range(7))
    # every pass shows each sample once, in a new order
    passes = [sorted(sum((whole.batches[i] for i in range(p, p + 3)), [])) for p in (0, 3)]
    assert passes == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]] * 2
    assert whole.batches[0] + whole.batches[1] + whole.batches[2] != (
        whole.batches[3] + whole.batches[4] + whole.batches[5])

    work = tmp_path / 'stopped'
    with pytest.raises(SystemExit) as e:
        iter_runner(work, _Record(signal_at=4)).train()
    assert e.value.code == time_limit_hook.EXIT_TIME_LIMIT
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_5.pth')
    assert _finished(work, 7) is False
    resumed = _Record()
    runner = iter_runner(work, resumed, resume=True, load_from=str(work / 'iter_5.pth'))
    runner.train()
    assert resumed.batches == {i: whole.batches[i] for i in (5, 6)}
    assert all(torch.equal(expected[k], v) for k, v in _weights(runner).items())
    assert _finished(work, 7)
    # the stop's file went once CheckpointHook saved past it; CheckpointHook keeps its own
    assert resumed.files[0] == ['iter_2.pth', 'iter_4.pth', 'iter_6.pth']
    assert resumed.files[-1] == ['iter_4.pth', 'iter_6.pth', 'iter_7.pth']

    from_periodic = _Record()
    runner = iter_runner(tmp_path / 'from_periodic', from_periodic, resume=True,
                         load_from=str(tmp_path / 'whole' / 'iter_4.pth'))
    runner.train()
    assert from_periodic.batches == {i: whole.batches[i] for i in range(4, 7)}
    different = [k for k, v in _weights(runner).items() if not torch.equal(expected[k], v)]
    assert not different, f'resumed from iter_4.pth: {different} differ'
    assert (tmp_path / 'whole' / 'iter_4.pth').exists(), 'another folder\'s file removed'


def test_timed_saves_replace_each_other_and_leave_the_periodic_ones(tmp_path, no_slurm):
    """A timed save every iteration: after each iteration the folder holds CheckpointHook's
    files and at most one timed file, the same files at the end as without timed saves, and the
    same weights."""
    plain = _Record()
    runner = iter_runner(tmp_path / 'plain', plain)
    runner.train()
    expected = _weights(runner)
    timed = _Record()
    runner = iter_runner(tmp_path / 'timed', timed, save_every_minutes=1e-9)
    runner.train()
    assert all(torch.equal(expected[k], v) for k, v in _weights(runner).items())
    for it, (periodic, files) in enumerate(zip(plain.files, timed.files), start=1):
        extra = set(files) - set(periodic)
        assert set(periodic) <= set(files) and extra <= {f'iter_{it}.pth'}, (it, files)
    assert timed.files[-1] == plain.files[-1] == ['iter_4.pth', 'iter_6.pth', 'iter_7.pth']
    assert timed.files[2] == ['iter_2.pth', 'iter_3.pth']  # the timed iter_3 replaced iter_1


@pytest.mark.parametrize('stop', ['signal', 'kill'])
@pytest.mark.parametrize('at', [3, 6])
def test_a_stop_during_a_validation_validates_it_again(tmp_path, no_slurm, stop, at):
    """Validation every 3 iterations, CheckpointHook every 3: a time-limit signal or a kill
    during the validation at iteration ``at`` (6: the last) leaves a resume point that
    validates that iteration again, in full, and reads as finished only once it has."""
    whole = _Record()
    iter_runner(tmp_path / 'whole', whole, max_iters=6, ckpt_interval=3, val_interval=3).train()
    assert whole.validations == [[3, 3], [6, 3]]
    assert _finished(tmp_path / 'whole', 6)
    work = tmp_path / 'work'
    record = _Record(**{'val_signal_at' if stop == 'signal' else 'val_kill_at': at})
    with pytest.raises(SystemExit if stop == 'signal' else KeyboardInterrupt):
        iter_runner(work, record, max_iters=6, ckpt_interval=3, val_interval=3).train()
    assert record.validations[-1] == [at, 2]
    assert (work / 'last_checkpoint').read_text() == str(work / f'iter_{at}.pth')
    assert not _finished(work, 6), 'taken as finished before its last validation ran'
    resumed = _Record()
    iter_runner(work, resumed, max_iters=6, ckpt_interval=3, val_interval=3, resume=True,
                load_from=str(work / f'iter_{at}.pth')).train()
    assert resumed.validations == [v for v in whole.validations if v[0] >= at]
    assert _finished(work, 6)


def test_another_batch_count_inside_a_pass_is_refused(tmp_path, no_slurm):
    """A checkpoint saved inside a pass, resumed with another number of batches per pass (another
    number of GPUs): one line says what to do; where a pass ended, the run goes on."""
    work = tmp_path / 'work'
    with pytest.raises(SystemExit):
        iter_runner(work, _Record(signal_at=0)).train()
    runner = iter_runner(work, _Record(), batch_size=1, resume=True,
                         load_from=str(work / 'iter_1.pth'))
    with pytest.raises(UserError) as e:
        runner.train()
    msg = str(e.value)
    assert '\n' not in msg and 'after 1 of the 3 batches' in msg and '6 batches' in msg, msg
    iter_runner(tmp_path / 'pass', _Record(), max_iters=3).train()  # one whole pass
    record = _Record()
    runner = iter_runner(tmp_path / 'pass', record, batch_size=1, max_iters=5, resume=True,
                         load_from=str(tmp_path / 'pass' / 'iter_3.pth'))
    runner.train()
    assert runner.iter == 5 and [len(b) for b in record.batches.values()] == [1, 1]
