"""Resume policy and exact replay, piece by piece: per-sample seeds, skipping trained batches,
the work folder's record of its inputs, which files are resume points, the stage hand-off."""
import os
import pickle
import signal

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler

import custom_modules  # noqa: F401  (registers the sampler, loop and hooks)
from custom_modules.engine.hooks.checkpoint_hooks import OwnBestCheckpointHook
from custom_modules.datasets.samplers import ResumableBatchSampler, SampleIndex, seed_sample
from toolkit.resume_policy import ChangedInputsError, differences, resolve_resume, run_inputs
from helpers import REPO


S1 = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-s1-23e_labeled.py')
MOCO = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py')


def batches(sampler, epoch):
    sampler.sampler.set_epoch(epoch)
    return [[(int(i), i.seed) for i in b] for b in sampler]


def test_batches_carry_per_sample_seeds_and_skip_resumes_mid_epoch():
    sampler = ResumableBatchSampler(DefaultSampler(list(range(10)), shuffle=True, seed=3), 3,
                                    drop_last=True)
    first = batches(sampler, 0)
    assert len(first) == len(sampler) == 3
    assert first == batches(sampler, 0)  # deterministic
    second = batches(sampler, 1)
    seeds = {i: s for b in first for i, s in b}
    assert all(seeds[i] != s for b in second for i, s in b if i in seeds)  # new epoch, new seeds
    sampler.skip_next(2)
    assert batches(sampler, 0) == first[2:]  # the same batches, minus those already trained
    assert batches(sampler, 0) == first  # skipping applies once


def test_sample_index_reaches_workers_and_reseeds():
    idx = pickle.loads(pickle.dumps(SampleIndex(7, 1234)))
    assert idx == 7 and idx.seed == 1234
    draws = []
    for _ in range(2):
        assert seed_sample(idx) == 7
        draws.append((np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]


def cfg_for(tmp_path, path=S1, data_root=None, **kw):
    cfg = Config.fromfile(path)
    cfg.work_dir = str(tmp_path / 'work')
    root = data_root or str(tmp_path / 'labeled')
    os.makedirs(root, exist_ok=True)
    for ds in (cfg.train_dataloader.dataset, ):
        ds.data_root = root
    for k, v in kw.items():
        cfg.merge_from_dict({k: v})
    return cfg


def fake_resume_point(path, epoch=3, iter_=30):
    torch.save(dict(meta=dict(epoch=epoch, iter=iter_, seed=5), state_dict={}, optimizer={},
                    param_schedulers=[], message_hub={}), path)


def test_resume_refuses_other_inputs_and_names_them(tmp_path):
    cfg = cfg_for(tmp_path)
    assert resolve_resume(cfg, 'auto', run_inputs(cfg)).message.startswith('starting a new run')
    fake_resume_point(os.path.join(cfg.work_dir, 'epoch_3.pth'))
    # same inputs, a later stop and other loader settings: the same run
    again = cfg_for(tmp_path, **{'train_cfg.max_epochs': 30, 'train_dataloader.num_workers': 1})
    decision = resolve_resume(again, 'auto', run_inputs(again))
    assert 'resuming from' in decision.message
    assert decision.meta['epoch'] == 3  # the checkpoint's metadata: train.py's finished()
    assert again.resume and again.load_from.endswith('epoch_3.pth')
    assert again.randomness.seed == 5  # the run's own seed: same data order, same sample seeds
    other = cfg_for(tmp_path, data_root=str(tmp_path / 'other'),
                    **{'optim_wrapper.optimizer.lr': 0.02})
    with pytest.raises(ChangedInputsError) as e:
        resolve_resume(other, 'auto', run_inputs(other))
    msg = str(e.value)
    assert 'train_dataloader.dataset.data_root' in msg and str(tmp_path / 'other') in msg
    assert 'optim_wrapper.optimizer.lr: 0.03 -> 0.02' in msg
    assert '--work-dir NEW_DIR' in msg and '--allow-input-change' in msg
    resolve_resume(other, 'auto', run_inputs(other), allow_input_change=True)
    assert other.load_from.endswith('epoch_3.pth')
    again = cfg_for(tmp_path, data_root=str(tmp_path / 'other'), **{'optim_wrapper.optimizer.lr': 0.02})
    resolve_resume(again, 'auto', run_inputs(again))  # the record now holds the new inputs


def test_changed_pretrained_file_content_is_a_different_run(tmp_path):
    moco = tmp_path / 'moco.pth'
    moco.write_bytes(b'one')
    cfg = cfg_for(tmp_path, **{'model.backbone.init_cfg.checkpoint': str(moco)})
    before = run_inputs(cfg)
    moco.write_bytes(b'two')  # e.g. pretraining re-run into the same folder
    diffs = differences(before, run_inputs(cfg))
    assert diffs == [next(d for d in diffs if 'init_cfg.checkpoint (sha256)' in d)]
    # not given again (resuming): not compared
    unset = cfg_for(tmp_path)
    assert not [d for d in differences(before, run_inputs(unset)) if 'checkpoint' in d]


def test_explicit_resume_wins_unless_the_job_has_restarted(tmp_path):
    cfg = cfg_for(tmp_path)
    os.makedirs(cfg.work_dir)
    elsewhere = str(tmp_path / 'epoch_1.pth')
    fake_resume_point(elsewhere, epoch=1, iter_=10)
    resolve_resume(cfg, elsewhere, run_inputs(cfg))
    assert cfg.load_from == elsewhere
    own = os.path.join(cfg.work_dir, 'iter_17.pth')  # saved and named as TimeLimitHook does
    fake_resume_point(own, epoch=1, iter_=17)
    with open(os.path.join(cfg.work_dir, 'last_checkpoint'), 'w') as f:
        f.write(own)
    cfg = cfg_for(tmp_path)
    resolve_resume(cfg, elsewhere, run_inputs(cfg), restarted=True)
    assert cfg.load_from.endswith('iter_17.pth')  # the requeued job continues its own progress
    weights_only = str(tmp_path / 'keep_epoch_1.pth')
    torch.save(dict(meta=dict(epoch=1, iter=10), state_dict={}), weights_only)
    with pytest.raises(ValueError, match='not a resume point.*weights-only'):
        resolve_resume(cfg_for(tmp_path), weights_only, run_inputs(cfg))


def test_train_py_trains_nothing_when_the_checkpoint_resumed_ends_the_run(
        tmp_path, synthetic_root, capsys, monkeypatch):
    """A finished stage submitted again: resolve_resume's decision carries the checkpoint's
    metadata, so train.py knows it is done without reading the file a second time."""
    import train
    from toolkit import resume_policy
    reads = []
    read = resume_policy.read_checkpoint_meta
    monkeypatch.setattr(resume_policy, 'read_checkpoint_meta',
                        lambda path: reads.append(path) or read(path))
    ckpt = str(tmp_path / 'epoch_3.pth')
    fake_resume_point(ckpt, epoch=3)
    train.main([S1, '--work-dir', str(tmp_path / 'work'), '--resume', ckpt, '--data-root',
                os.path.join(synthetic_root, 'labeled'), '--cfg-options', 'train_cfg.max_epochs=3'])
    assert 'already finished its 3 epochs' in capsys.readouterr().out
    assert reads == [ckpt]


def test_stage_config_needs_the_previous_stage_checkpoint(tmp_path):
    cfg = cfg_for(tmp_path, S1.replace('s1-23e', 's2-27e'))
    cfg.load_from = str(tmp_path / 'missing' / 'epoch_23.pth')
    with pytest.raises(ValueError, match='previous stage.*train the previous stage first'):
        resolve_resume(cfg, 'auto', run_inputs(cfg))
    fake_resume_point(str(tmp_path / 'epoch_23.pth'), epoch=23, iter_=230)
    cfg.load_from = str(tmp_path / 'epoch_23.pth')
    assert 'continuing the previous stage' in resolve_resume(cfg, 'auto', run_inputs(cfg)).message


def test_no_resume_point_never_falls_back_to_mmengine_auto_resume(tmp_path):
    cfg = cfg_for(tmp_path)
    os.makedirs(cfg.work_dir)
    torch.save(dict(meta=dict(epoch=100, iter=1000), state_dict={}),
               os.path.join(cfg.work_dir, 'keep_epoch_100.pth'))
    with open(os.path.join(cfg.work_dir, 'last_checkpoint'), 'w') as f:
        f.write(os.path.join(cfg.work_dir, 'keep_epoch_100.pth'))
    assert 'nothing to resume' in resolve_resume(cfg, 'auto', run_inputs(cfg)).message
    assert cfg.resume is False


class _Runner:
    def __init__(self, work_dir):
        self.work_dir = work_dir


def test_later_stage_keeps_the_best_score_but_not_the_earlier_stage_best_file(tmp_path):
    s1_best = str(tmp_path / 's1' / 'best_coco_bbox_mAP_epoch_20.pth')
    ckpt = dict(message_hub=dict(runtime_info=dict(best_ckpt=s1_best, best_score=0.3)))
    OwnBestCheckpointHook().after_load_checkpoint(_Runner(str(tmp_path / 's2')), ckpt)
    assert ckpt['message_hub']['runtime_info'] == dict(best_score=0.3)
    own = str(tmp_path / 's2' / 'best_coco_bbox_mAP_epoch_25.pth')
    ckpt = dict(message_hub=dict(runtime_info=dict(best_ckpt=own, best_score=0.3)))
    OwnBestCheckpointHook().after_load_checkpoint(_Runner(str(tmp_path / 's2')), ckpt)
    assert ckpt['message_hub']['runtime_info']['best_ckpt'] == own


class _TrainRunner:
    epoch, iter, work_dir = 0, 0, '/nonexistent'
    train_dataloader = [None] * 4
    train_loop = None  # an epoch-based loop's place (TimeLimitHook asks which kind)

    class message_hub:
        @staticmethod
        def get_info(key):
            return None

    class logger:
        warnings = []

        @classmethod
        def warning(cls, msg):
            cls.warnings.append(msg)


def test_time_limit_signal_before_any_training_is_not_a_requeue_loop():
    """A limit shorter than the signal lead (e.g. a 10-minute debug queue with the 15-minute
    lead): the signal arrives at start; stopping then would requeue into the same signal forever."""
    from custom_modules.engine.hooks import time_limit_hook
    hook, runner = time_limit_hook.TimeLimitHook(), _TrainRunner()
    hook.before_train(runner)
    os.kill(os.getpid(), signal.SIGUSR1)
    hook.before_train_epoch(runner)  # no SystemExit
    assert 'shorter than its --signal lead' in runner.logger.warnings[-1]
    assert not time_limit_hook._stop_requested
    hook.after_train_iter(runner, 0)  # trained one iteration, no new signal: goes on
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
