"""The resume and stop cases of a careful review, each at the function level: a new run over an
old one, a rollback and a restart, another process count, a kill between the last two saves,
SIGTERM, a time-limit signal before training or during validation."""
import os

import pytest
import torch
from mmengine.config import Config

import custom_modules  # noqa: F401  (registers the hooks and the atomic backend)
from custom_modules.resume_policy import ChangedInputsError, resolve_resume, run_inputs
from custom_modules.user_errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S1 = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-s1-23e_labeled.py')
MOCO = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py')


def cfg_for(tmp_path, data='a', path=S1):
    cfg = Config.fromfile(path)
    cfg.work_dir = str(tmp_path / 'work')
    root = str(tmp_path / data)
    os.makedirs(root, exist_ok=True)
    cfg.train_dataloader.dataset.data_root = root
    return cfg


def resume_point(path, epoch, iter_):
    """A resume point as CheckpointHook leaves it: the file, then ``last_checkpoint``."""
    torch.save(dict(meta=dict(epoch=epoch, iter=iter_, seed=5), state_dict={}, optimizer={},
                    param_schedulers=[], message_hub={}), path)
    with open(os.path.join(os.path.dirname(path), 'last_checkpoint'), 'w') as f:
        f.write(path)


def test_new_run_over_resume_points_refuses_and_leaves_the_record(tmp_path):
    """Case 1: a command without --resume in a folder with resume points would rewrite the
    record for data B and keep data A's checkpoints; a later --resume then continued them."""
    cfg = cfg_for(tmp_path, 'a')
    resolve_resume(cfg, None, run_inputs(cfg))
    resume_point(os.path.join(cfg.work_dir, 'epoch_5.pth'), 5, 50)
    b = cfg_for(tmp_path, 'b')
    with pytest.raises(UserError) as e:
        resolve_resume(b, None, run_inputs(b))
    msg = str(e.value)
    assert 'epoch_5.pth' in msg and '--resume' in msg and '--work-dir NEW_DIR' in msg
    b = cfg_for(tmp_path, 'b')
    with pytest.raises(ChangedInputsError, match='data_root'):  # the record still says data A
        resolve_resume(b, 'auto', run_inputs(b))
    a = cfg_for(tmp_path, 'a')
    assert resolve_resume(a, 'auto', run_inputs(a)).meta['epoch'] == 5


def test_explicit_rollback_holds_across_restarts(tmp_path):
    """Case 2: --resume epoch_12.pth after a run diverged at epoch 15, then a requeue before the
    continued run saved anything: the restart continued epoch_15.pth."""
    cfg = cfg_for(tmp_path)
    resolve_resume(cfg, None, run_inputs(cfg))
    work = cfg.work_dir
    for n in (12, 15):
        resume_point(os.path.join(work, f'epoch_{n}.pth'), n, 10 * n)
    rollback = os.path.join(work, 'epoch_12.pth')
    cfg = cfg_for(tmp_path)
    assert resolve_resume(cfg, rollback, run_inputs(cfg)).meta['epoch'] == 12
    cfg = cfg_for(tmp_path)
    resolve_resume(cfg, rollback, run_inputs(cfg), restarted=True)
    assert cfg.load_from == rollback, 'the restart went back to the abandoned run'
    cfg = cfg_for(tmp_path)  # a plain --resume (outside Slurm) continues the rollback too
    assert resolve_resume(cfg, 'auto', run_inputs(cfg)).meta['epoch'] == 12
    resume_point(os.path.join(work, 'epoch_13.pth'), 13, 130)  # the continued run's first save
    cfg = cfg_for(tmp_path)
    resolve_resume(cfg, rollback, run_inputs(cfg), restarted=True)
    assert cfg.load_from == os.path.join(work, 'epoch_13.pth')


def test_lr_not_rescaled_for_another_process_count_is_said(tmp_path):
    """Case 9: auto_scale_lr scales the LR for the new total batch, then the resumed optimizer
    and scheduler state put the old one back; the message says so."""
    cfg = cfg_for(tmp_path, path=MOCO)
    four = dict(run_inputs(cfg), world_size=4)
    resolve_resume(cfg, None, four)
    resume_point(os.path.join(cfg.work_dir, 'epoch_5.pth'), 5, 50)
    cfg = cfg_for(tmp_path, path=MOCO)
    two = dict(run_inputs(cfg), world_size=2)
    with pytest.raises(ChangedInputsError, match='learning rate stays'):
        resolve_resume(cfg, 'auto', two)
    cfg = cfg_for(tmp_path, path=MOCO)
    decision = resolve_resume(cfg, 'auto', two, allow_input_change=True)
    assert 'learning rate stays' in decision.message and 'world_size: 4 -> 2' in decision.message
