"""The semi-supervised stage (configs/soft_teacher): its numbers pinned, its sampler's batches, the
unlabeled set read as pretraining reads it, and the demo config trained through tools/train.py,
stopped by the time-limit signal and resumed: teacher and student end as an uninterrupted run's;
tools/test.py and tools/infer.py with its checkpoint."""
import json
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import HOOKS

import custom_modules  # noqa: F401
from custom_modules.datasets.samplers import SemiSupervisedSampler
from custom_modules.engine.hooks import time_limit_hook
from custom_modules.errors import UserError
from helpers import REPO, SignalBeforeIter
from toolkit.config_edits import dataloader_datasets, set_data_root, set_unlabeled_root
from toolkit.resume_policy import ChangedInputsError, resolve_resume, run_inputs

SEMI = os.path.join(REPO, 'configs/soft_teacher/soft-teacher_faster-rcnn_r50-mocov2-pre_fpn_2xb5-'
                    '12e_labeled-unlabeled.py')
SEMI_DEMO = os.path.join(REPO, 'configs/soft_teacher/soft-teacher_faster-rcnn_r50-mocov2-pre_fpn_'
                         '1xb5-demo-2e_synthetic.py')
SEMI_ITERS = os.path.join(REPO, 'configs/soft_teacher/soft-teacher_faster-rcnn_r50-mocov2-pre_'
                          'fpn_2xb5-180k_labeled-unlabeled.py')


def test_recipe_numbers():
    """Soft Teacher's values (mmdet's soft_teacher config, the paper's), our epochs of labeled
    passes, and the start from the supervised chain's best checkpoint."""
    cfg = Config.fromfile(SEMI)
    assert cfg.model.type == 'SoftTeacher'
    semi = cfg.model.semi_train_cfg
    assert (semi.sup_weight, semi.unsup_weight) == (1.0, 4.0)
    assert (semi.rpn_pseudo_thr, semi.cls_pseudo_thr, semi.reg_pseudo_thr) == (0.9, 0.9, 0.02)
    assert (semi.jitter_times, semi.jitter_scale, semi.freeze_teacher) == (10, 0.06, True)
    assert cfg.model.semi_test_cfg.predict_on == 'teacher'
    assert dict(type='MeanTeacherHook', momentum=0.001) in cfg.custom_hooks
    assert [h['type'] for h in cfg.custom_hooks[:3]] == ['FiniteLossHook', 'EpochSeedHook',
                                                          'TimeLimitHook']
    loader = cfg.train_dataloader
    assert loader.batch_size == loader.sampler.batch_size == 5
    assert loader.sampler == dict(type='SemiSupervisedSampler', batch_size=5, source_ratio=[1, 4])
    assert cfg.optim_wrapper.optimizer.lr == 0.01 and cfg.auto_scale_lr.base_batch_size == 40
    assert cfg.train_cfg.max_epochs == 12 and cfg.param_scheduler[1].milestones == [8, 11]
    assert cfg.param_scheduler[0].end == 500
    assert cfg.train_cfg.type == 'ResumableEpochBasedTrainLoop'
    assert cfg.val_cfg.type == 'TeacherStudentValLoop'
    assert cfg.default_hooks.checkpoint.save_best == 'teacher/coco/bbox_mAP'
    # the detector of the seed's stages: frozen BN, every weight from the s1-s3 chain's best
    det = cfg.model.detector
    assert det.backbone.norm_cfg == dict(type='BN', requires_grad=False) and det.backbone.norm_eval
    assert det.backbone.init_cfg is None
    assert cfg.load_from == 'best-of://' + ','.join(
        f'work_dirs/faster-rcnn_r50-mocov2-pre_fpn_2xb2-{s}_labeled'
        for s in ('s1-23e', 's2-27e', 's3-37e'))
    for pipeline in (cfg.sup_pipeline, cfg.weak_pipeline, cfg.strong_pipeline):
        resize = next(t for t in pipeline if t['type'] == 'RandomResize')
        assert resize.scale == [(1333, 400), (1333, 1200)]


def test_recipe_by_iterations():
    """The same stage counted in iterations as mmdet counts it: 180k, x0.1 at 120k and 160k,
    validation and a checkpoint every 15k (a labeled pass at 2 GPUs); all else the epoch
    config's."""
    cfg, epochs = Config.fromfile(SEMI_ITERS), Config.fromfile(SEMI)
    assert cfg.train_cfg == dict(type='ResumableIterBasedTrainLoop', max_iters=180000,
                                 val_interval=15000)
    assert [(p.type, p.by_epoch, p.end) for p in cfg.param_scheduler] == [
        ('LinearLR', False, 500), ('MultiStepLR', False, 180000)]
    assert cfg.param_scheduler[1].milestones == [120000, 160000]
    assert cfg.param_scheduler[1].gamma == cfg.param_scheduler[0].start_factor * 100 == 0.1
    checkpoint = cfg.default_hooks.checkpoint
    assert (checkpoint.by_epoch, checkpoint.interval) == (False, 15000)
    assert checkpoint.save_best == 'teacher/coco/bbox_mAP' and cfg.log_processor.by_epoch is False
    for key in ('model', 'train_dataloader', 'optim_wrapper', 'custom_hooks', 'load_from',
                'auto_scale_lr', 'val_cfg'):
        assert cfg[key] == epochs[key], key
    # 12 passes of 15,000 batches at 2 GPUs: the epoch config's schedule
    per_pass = 30000 // 2 // cfg.train_dataloader.sampler.source_ratio[0]
    assert cfg.train_cfg.max_iters == epochs.train_cfg.max_epochs * per_pass
    steps = [e * per_pass for e in epochs.param_scheduler[1].milestones]
    assert steps[0] == 120000 and steps[1] - per_pass < 160000 < steps[1]  # whole epochs there


def test_sampler_mixes_the_sources_and_continues_the_unlabeled_stream():
    class Part:
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

    class Concat:
        datasets = [Part(10), Part(37)]

    def epoch(rank, e, world=2):
        s = SemiSupervisedSampler(Concat(), batch_size=5, seed=3)
        s.rank, s.world_size = rank, world
        s.batches = -(-10 // world) // 1
        s.set_epoch(e)
        return list(s)

    batches = [epoch(r, e) for e in (0, 1) for r in (0, 1)]
    for indices in batches:
        assert len(indices) == 25  # 5 labeled images per rank: 5 batches of 1 + 4
        for b in range(5):
            batch = indices[5 * b:5 * b + 5]
            assert batch[0] < 10 and all(10 <= i < 47 for i in batch[1:])
    # one pass over the labeled images per epoch, split between the ranks
    for e in (0, 1):
        labeled = batches[2 * e][::5] + batches[2 * e + 1][::5]
        assert sorted(labeled) == list(range(10))
    # the unlabeled stream: 40 draws over 2 epochs and 2 ranks, every image once before any
    # repeats (37 images), epoch 1 going on where epoch 0 stopped
    unlabeled = [i for indices in batches for b in range(5) for i in indices[5 * b + 1:5 * b + 5]]
    assert len(set(unlabeled)) == 37
    assert epoch(0, 1) == batches[2] and epoch(0, 0) != epoch(0, 1)  # (seed, epoch) decide


def test_unlabeled_set_lists_what_pretraining_lists(tmp_path):
    import custom_modules.datasets.unlabeled  # noqa: F401  (a pretraining config's import)
    from mmdet.registry import DATASETS as DETECTION
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS as PRETRAINING
    from PIL import Image
    root = tmp_path / 'unlabeled'
    (root / 'sub').mkdir(parents=True)
    for name in ('2.PNG', '10.PNG', 'sub/1.png', '._2.PNG', 'notes.txt'):
        Image.new('RGB', (8, 8)).save(root / name, format='PNG') if name.lower().endswith(
            '.png') else (root / name).write_text('x')
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = DETECTION.build(dict(type='UnlabeledDetDataset', data_root=str(root), pipeline=[]))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pre = PRETRAINING.build(dict(type='UnlabeledImageFolder', data_root=str(root),
                                     with_label=False, pipeline=[]))
    infos = [det.get_data_info(i) for i in range(len(det))]
    assert [d['img_path'] for d in infos] == [
        pre.get_data_info(i)['img_path'] for i in range(len(pre))]
    assert len(infos) == 3 and all(d['instances'] == [] for d in infos)


def test_unlabeled_switch_and_training_record(tmp_path, synthetic_root):
    """--unlabeled sets the unlabeled set only, --data-root the labeled one; the run's record
    holds both, so a resubmission with another unlabeled folder is refused."""
    labeled = os.path.join(synthetic_root, 'labeled')
    unlabeled = os.path.join(synthetic_root, 'unlabeled')

    def cfg_for(unlabeled_root):
        cfg = Config.fromfile(SEMI)
        cfg.work_dir = str(tmp_path / 'work')
        set_data_root(cfg, labeled)
        set_unlabeled_root(cfg, unlabeled_root)
        return cfg
    cfg = cfg_for(unlabeled)
    roots = {ds['type']: ds['data_root'] for ds in dataloader_datasets(cfg)}
    assert roots == {'LabeledDetDataset': labeled, 'UnlabeledDetDataset': unlabeled}
    resolve_resume(cfg, None, run_inputs(cfg))
    point = os.path.join(cfg.work_dir, 'epoch_1.pth')  # a resume point as the runner leaves it
    torch.save(dict(meta=dict(epoch=1, iter=4, seed=0), state_dict={}, optimizer={},
                    param_schedulers=[], message_hub={}), point)
    with open(os.path.join(cfg.work_dir, 'last_checkpoint'), 'w') as f:
        f.write(point)
    assert resolve_resume(cfg_for(unlabeled), 'auto', run_inputs(cfg)).meta['epoch'] == 1
    os.makedirs(tmp_path / 'other')
    from PIL import Image
    Image.new('RGB', (8, 8)).save(tmp_path / 'other' / '0.PNG')
    with pytest.raises(ChangedInputsError, match='unlabeled'):
        other = cfg_for(str(tmp_path / 'other'))
        resolve_resume(other, 'auto', run_inputs(other))
    with pytest.raises(UserError, match='no unlabeled images'):
        set_unlabeled_root(Config.fromfile(os.path.join(
            REPO, 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_1xb4-demo-4e_synthetic.py')),
            unlabeled)


def _shrunk_demo_args(config, work, synthetic_root, demo_detector) -> list:
    """tools/train.py's arguments for the demo on the generated data from the untrained demo
    detector, shrunk: 3 labeled images (3 batches per pass over them), batches of one labeled
    and one unlabeled image (the demo's 1 + 4 took 1.35 times as long), half the demo's scale, no
    loader workers (their start costs more than these iterations)."""
    return [str(config), '--work-dir', str(work),
            '--data-root', os.path.join(synthetic_root, 'labeled'),
            '--unlabeled', os.path.join(synthetic_root, 'unlabeled'),
            '--cfg-options', f'load_from={demo_detector[0]}',
            'train_dataloader.dataset.datasets.0.indices=3', 'train_dataloader.batch_size=2',
            'train_dataloader.sampler.batch_size=2', 'train_dataloader.sampler.source_ratio=[1,1]',
            *(f'train_dataloader.dataset.datasets.{at}.scale=[(128,80),(128,112)]' for at in
              ('0.pipeline.2', '1.pipeline.2.unsup_teacher.0', '1.pipeline.2.unsup_student.0')),
            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False']


@pytest.mark.slow
def test_demo_stops_resumes_and_replays_teacher_and_student(synthetic_root, demo_detector,
                                                            tmp_path, signals_restored,
                                                            monkeypatch, capfd):
    """Through tools/train.py: stopped by the time-limit signal inside an epoch and resumed, the
    demo ends with an uninterrupted run's teacher (EMA) and student weights: the samplers' places
    and the teacher's average come back exactly. tools/test.py then evaluates the teacher, or
    the student when asked, and says which; a plain detector config refuses the file."""
    import test as test_tool
    import train as train_tool
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    HOOKS.register_module('SignalBeforeIter', module=SignalBeforeIter, force=True)
    hooks = Config.fromfile(SEMI_DEMO).custom_hooks
    final = {}
    for name, at in (('uninterrupted', -1), ('stopped', 1)):
        work = tmp_path / name
        config = tmp_path / f'{name}.py'
        config.write_text(f'_base_ = {SEMI_DEMO!r}\ncustom_hooks = [*{hooks!r}, '
                          f'dict(type="SignalBeforeIter", at={at})]\n')
        # 3 labeled images: 3 iterations per epoch, 6 in all
        args = _shrunk_demo_args(config, work, synthetic_root, demo_detector)
        if at >= 0:
            with pytest.raises(SystemExit) as e:
                train_tool.main(args)
            assert e.value.code == time_limit_hook.EXIT_TIME_LIMIT
            # inside epoch 1, after its second iteration
            assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')
            train_tool.main([*args, '--resume'])
        else:
            train_tool.main(args)
        final[name] = torch.load(work / 'epoch_2.pth', map_location='cpu',
                                 weights_only=False)['state_dict']
    a, b = final['uninterrupted'], final['stopped']
    assert any(k.startswith('teacher.') for k in a) and any(k.startswith('student.') for k in a)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'
    checkpoint = str(tmp_path / 'stopped' / 'epoch_2.pth')
    labeled = os.path.join(synthetic_root, 'labeled')
    capfd.readouterr()
    for predict_on in ('teacher', 'student'):
        test_tool.main([SEMI_DEMO, checkpoint, '--data-root', labeled, '--work-dir',
                        str(tmp_path / 'test'), *(['--predict-on', 'student'] if
                                                   predict_on == 'student' else [])])
        out = capfd.readouterr().out
        assert out.count(' Average ') == 12 and f'model: the {predict_on} (' in out, out[-2000:]
    detector_demo = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_'
                                 '1xb4-demo-4e_synthetic.py')
    with pytest.raises(UserError, match='holds a teacher and a student detector'):
        test_tool.main([detector_demo, checkpoint, '--data-root', labeled])
    _infer_predicts_with_the_chosen_model(checkpoint, detector_demo, labeled, tmp_path, capfd)


def _infer_predicts_with_the_chosen_model(checkpoint, detector_demo, labeled, tmp_path, capfd):
    """tools/infer.py with the semi-supervised config draws the teacher's detections (or the
    student's with --predict-on student), and says which: each equal to the plain detector
    config's on a file holding that model's weights alone; the plain config refuses the
    teacher+student file."""
    import infer as infer_tool
    images = os.path.join(labeled, 'validation', 'images')
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=False)
    for model in ('teacher', 'student'):
        alone = tmp_path / f'{model}_alone.pth'
        torch.save(dict(meta=ckpt['meta'], state_dict={
            k[len(model) + 1:]: v for k, v in ckpt['state_dict'].items()
            if k.startswith(model + '.')}), alone)
        outputs = {}
        # every box kept (the untrained demo detector scores low): many to compare
        for config, weights, extra in (
                (SEMI_DEMO, checkpoint, ['--predict-on', model, '--cfg-options',
                                         'model.detector.test_cfg.rcnn.score_thr=0']),
                (detector_demo, str(alone), ['--cfg-options', 'model.test_cfg.rcnn.score_thr=0'])):
            out_dir = tmp_path / 'infer' / f'{model}-{os.path.basename(weights)}'
            infer_tool.main([config, weights, images, '--num', '2', '--device', 'cpu',
                             '--score-thr', '0.0', '--out-dir', str(out_dir), *extra])
            outputs[config] = {n: json.loads((out_dir / n).read_text())['detections']
                               for n in sorted(os.listdir(out_dir)) if n.endswith('.json')}
        assert f'model: the {model} (' in capfd.readouterr().out
        assert len(outputs[SEMI_DEMO]) == 2 and outputs[SEMI_DEMO] == outputs[detector_demo]
        assert any(outputs[SEMI_DEMO].values()), 'no detection to compare'
    with pytest.raises(UserError, match='holds a teacher and a student detector'):
        infer_tool.main([detector_demo, checkpoint, images, '--num', '1', '--device', 'cpu',
                         '--out-dir', str(tmp_path / 'refused')])


@pytest.mark.slow
def test_demo_by_iterations_stops_resumes_and_replays(synthetic_root, demo_detector, tmp_path,
                                                      signals_restored, monkeypatch):
    """The 180k config's loop, schedulers and checkpoints on the demo, through tools/train.py:
    7 iterations over passes of 3 labeled images, stopped by the time-limit signal after
    iteration 5 (timed saves every iteration until then) and resumed, and resumed from
    CheckpointHook's iter_4.pth in another folder: teacher and student both end as the
    uninterrupted run's; the timed saves left CheckpointHook's files alone."""
    import train as train_tool
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    HOOKS.register_module('SignalBeforeIter', module=SignalBeforeIter, force=True)
    iters = Config.fromfile(SEMI_ITERS)
    hooks = Config.fromfile(SEMI_DEMO).custom_hooks
    schedulers = [dict(iters.param_scheduler[0], end=2),
                  dict(iters.param_scheduler[1], end=7, milestones=[5])]
    final = {}

    def run(name, at=-1, extra=()):
        work = tmp_path / name
        config = tmp_path / f'{name}.py'
        config.write_text(
            f'_base_ = {SEMI_DEMO!r}\n'
            f'custom_hooks = [*{hooks!r}, dict(type="SignalBeforeIter", at={at})]\n'
            f'train_cfg = dict(_delete_=True, **{dict(iters.train_cfg, max_iters=7)!r})\n'
            f'param_scheduler = {schedulers!r}\n'
            f'default_hooks = dict(checkpoint=dict(by_epoch=False, interval=2))\n'
            f'log_processor = {iters.log_processor!r}\n')
        return work, [*_shrunk_demo_args(config, work, synthetic_root, demo_detector), *extra]

    work, args = run('uninterrupted')
    train_tool.main(args)
    final['uninterrupted'] = work / 'iter_7.pth'
    work, args = run('stopped', at=4, extra=['custom_hooks.2.save_every_minutes=1e-9'])
    with pytest.raises(SystemExit) as e:
        train_tool.main(args)
    assert e.value.code == time_limit_hook.EXIT_TIME_LIMIT
    # CheckpointHook's two files and the stop's, no timed one left over
    assert sorted(n for n in os.listdir(work) if n.endswith('.pth')) == [
        'iter_2.pth', 'iter_4.pth', 'iter_5.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_5.pth')
    train_tool.main([*args, '--resume'])
    final['stopped'] = work / 'iter_7.pth'
    work, args = run('from_periodic')
    train_tool.main([*args, '--resume', str(tmp_path / 'uninterrupted' / 'iter_4.pth')])
    final['from_periodic'] = work / 'iter_7.pth'
    weights = {k: torch.load(v, map_location='cpu', weights_only=False)['state_dict']
               for k, v in final.items()}
    a = weights.pop('uninterrupted')
    assert any(k.startswith('teacher.') for k in a) and any(k.startswith('student.') for k in a)
    for name, b in weights.items():
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f'{name}: {len(different)} tensors differ, e.g. {different[:3]}'


def test_the_start_is_the_best_checkpoint_over_the_chains_folders(tmp_path):
    """best-of://A,B,C: the staged chain's best validation score, whichever stage wrote it."""
    from mmengine.runner import CheckpointLoader
    folders = []
    for stage, (epoch, score) in zip(('s1', 's2', 's3'), ((20, 0.21), (26, 0.24), (37, 0.23))):
        folder = tmp_path / stage
        folder.mkdir()
        torch.save(dict(meta=dict(epoch=epoch), state_dict=dict(w=torch.tensor([epoch])),
                        message_hub=dict(runtime_info=dict(best_score=score))),
                   folder / f'best_coco_bbox_mAP_epoch_{epoch}.pth')
        folders.append(str(folder))
    ckpt = CheckpointLoader.load_checkpoint('best-of://' + ','.join(folders), map_location='cpu')
    assert ckpt['state_dict']['w'].item() == 26


def test_a_best_of_list_of_folders_survives_cfg_options():
    """`--cfg-options load_from=best-of://A,B,C` (the chain's semi-supervised job): mmengine's
    DictAction splits the value at its commas; train.py joins the folders back."""
    import train as train_tool
    from toolkit.config_edits import merge_cfg_options
    args = train_tool.parse_args([SEMI, '--cfg-options', 'load_from=best-of://a,b,c'])
    cfg = Config.fromfile(SEMI)
    merge_cfg_options(cfg, args.cfg_options)
    assert cfg.load_from == 'best-of://a,b,c'
