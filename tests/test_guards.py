"""Crash safety: atomic checkpoint files, finding the newest complete checkpoint, NaN stop."""
import os

import pytest
import torch
from mmengine.fileio import get_file_backend

import custom_modules  # noqa: F401  (installs the atomic local backend)
from custom_modules.cli import latest_checkpoint
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


def test_latest_checkpoint_survives_a_lost_pointer(tmp_path):
    for n in (3, 4, 12):
        (tmp_path / f'epoch_{n}.pth').write_bytes(b'x')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_4.pth'))
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_4.pth')
    (tmp_path / 'last_checkpoint').write_text('')  # killed while the pointer was rewritten
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_12.pth')
    assert latest_checkpoint(str(tmp_path / 'missing')) is None


class _Runner:
    iter, epoch, work_dir = 41, 2, '/w'


def test_nan_loss_stops_and_names_the_iteration():
    hook = FiniteLossHook()
    hook.after_train_iter(_Runner(), 0, outputs={'loss': torch.tensor(1.5)})
    with pytest.raises(FloatingPointError, match=r'iteration 42 \(epoch 3'):
        hook.after_train_iter(_Runner(), 0, outputs={'loss': torch.tensor(float('nan')),
                                                     'loss_cls': torch.tensor(float('inf'))})
