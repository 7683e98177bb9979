"""Crash safety: atomic checkpoint files, finding the newest resume point, NaN stop."""
import os

import pytest
import torch
from mmengine.fileio import get_file_backend

import custom_modules  # noqa: F401  (installs the atomic local backend)
from custom_modules.resume_policy import latest_resume_point
from custom_modules.hooks import FiniteLossHook


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_2.pth'
    backend = get_file_backend(str(target))
    backend.put(b'complete checkpoint', str(target))
    assert target.read_bytes() == b'complete checkpoint'

    def killed(*args, **kwargs):  # the process dies half-way through writing
        raise KeyboardInterrupt
    monkeypatch.setattr(os, 'fsync', killed)
    with pytest.raises(KeyboardInterrupt):
        backend.put(b'new but never finished', str(target))
    assert target.read_bytes() == b'complete checkpoint'  # old file intact, no partial file
    assert sorted(os.listdir(tmp_path)) == ['epoch_2.pth']


def test_checkpoint_file_mode_follows_the_umask(tmp_path):
    """Files written through the backend get open()'s mode, not mkstemp's private 0600:
    teammates sharing a cluster project folder read each other's checkpoints."""
    old = os.umask(0o022)
    try:
        get_file_backend(str(tmp_path)).put(b'x', str(tmp_path / 'epoch_1.pth'))
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
