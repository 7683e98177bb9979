"""Train any config of this repository (MoCo v2 pretraining or Faster R-CNN fine-tuning).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--allow-input-change]
        [--amp [auto|bf16|fp16]] [--data-root DIR] [--unlabeled DIR]
        [--coco-train ANN IMAGES --coco-val ANN IMAGES]
        [--pretrained CKPT [--backbone-from-detector]] [--tensorboard]
        [--cfg-options k=v ...] [--launcher L] [--verbose] [--check-inputs-only]

--data-root takes the course layout, a COCO-format folder (annotations/instances_<split>.json,
images in <split>/) or a .sqsh image; --coco-train / --coco-val name a COCO annotation file and
its image folder in any other layout. --data-root, --pretrained and --amp are shorthands for the
config fields they set; any other
field is changed with --cfg-options (mmengine's general mechanism). --tensorboard adds mmengine's
TensorboardVisBackend beside the scalars.json log (`tensorboard --logdir work_dirs`); it needs
`pip install tensorboard`, which the pinned stack leaves out.
"""
import argparse
import os
import os.path as osp
import signal


class _EarlySignal:
    """SIGUSR1 until training starts. Slurm's time-limit signal (sbatch --signal=USR1@...) kills
    by default; one arriving this early changes nothing but is noted (``arrived``), and
    TimeLimitHook logs it when it takes the signal over."""
    arrived = False

    def __call__(self, signum, frame):
        self.arrived = True


signal.signal(signal.SIGUSR1, _EarlySignal())

from toolkit import bootstrap  # noqa: E402

bootstrap.setup()

from mmengine.config import Config, DictAction  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config')
    p.add_argument('--work-dir', help='default: work_dirs/<config name>')
    p.add_argument('--resume', nargs='?', const='auto',
                   help='resume from PATH, or (no value) from the latest resume point in '
                   'work_dir if it was trained from the same inputs')
    p.add_argument('--allow-input-change', action='store_true',
                   help='resume work_dir although its config, data or checkpoints changed')
    p.add_argument('--amp', nargs='?', const='auto', choices=('auto', 'bf16', 'fp16'),
                   help='automatic mixed precision: bfloat16 where the GPU has it, else float16 '
                   '(auto, the default); bf16 also runs on CPU')
    p.add_argument('--data-root', help='dataset folder instead of the config\'s data_root')
    p.add_argument('--unlabeled', metavar='DIR',
                   help='the unlabeled images of a semi-supervised config (configs/soft_teacher)'
                   ': any image folder, a .sqsh image or a folder inside one')
    p.add_argument('--coco-train', nargs=2, metavar=('ANN_FILE', 'IMAGES'),
                   help='COCO-format training data: annotation file and image folder')
    p.add_argument('--coco-val', nargs=2, metavar=('ANN_FILE', 'IMAGES'),
                   help='COCO-format validation data: annotation file and image folder')
    p.add_argument('--pretrained', help='backbone checkpoint for a detection config: our MoCo / '
                   'DenseCL file, a facebookresearch/moco file or a torchvision ResNet-50')
    p.add_argument('--backbone-from-detector', action='store_true',
                   help='let --pretrained take the backbone of a detector checkpoint')
    p.add_argument('--tensorboard', action='store_true',
                   help='also log the scalars for TensorBoard (needs the tensorboard package)')
    p.add_argument('--verbose', action='store_true',
                   help='also show the environment, config and hook dumps on the terminal')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    p.add_argument('--check-inputs-only', action='store_true',
                   help='write and train nothing: refuse as --resume would if work_dir holds a '
                   'run trained from other inputs, else print what --resume would do (finished, '
                   'resume or new); for checks before a job is queued')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_cfg(args):
    """The config to train, and resolve_resume's decision: what to continue, with that
    checkpoint's metadata."""
    from toolkit.config_edits import (add_tensorboard, check_pretrained, default_work_dir,
                                      drop_backbone_init, merge_cfg_options, set_amp,
                                      set_coco_files, set_data_root, set_pretrained,
                                      set_unlabeled_root, setup_coco)
    from toolkit.launch import set_launcher
    from toolkit.resume_policy import check_resume, resolve_resume, run_inputs
    from toolkit.checks import check_amp, check_data_folders, check_tensorboard
    cfg = Config.fromfile(args.config)
    set_launcher(cfg, args.launcher)
    if args.cfg_options:
        merge_cfg_options(cfg, args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or default_work_dir(args.config)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if args.unlabeled:
        set_unlabeled_root(cfg, args.unlabeled)
    for name, files in (('train_dataloader', args.coco_train), ('val_dataloader', args.coco_val)):
        if files:
            set_coco_files(cfg, name, *files)
    dry = args.check_inputs_only
    if args.pretrained and dry and not osp.exists(args.pretrained):
        # the pretraining job queued before this one writes it
        cfg.model.backbone.init_cfg.checkpoint = args.pretrained
    elif args.pretrained:
        say(set_pretrained(cfg, args.pretrained, args.backbone_from_detector))
    if not dry:  # the node that runs the job has the GPU, not the one that submits it
        check_amp(args.amp)
    if args.amp:
        set_amp(cfg, args.amp)
    if args.tensorboard:
        add_tensorboard(cfg)
    check_tensorboard(cfg)  # also when set with --cfg-options
    check_data_folders(cfg, names=('train_dataloader', 'val_dataloader'))
    setup_coco(cfg, names=('train_dataloader', 'val_dataloader'))
    if dry:
        # a --pretrained file the pretraining queued with this job will write: compared too
        planned = [args.pretrained] if args.pretrained and not osp.exists(args.pretrained) else []
        return cfg, check_resume(cfg, run_inputs(cfg, planned), args.allow_input_change)
    restarted = int(os.environ.get('SLURM_RESTART_COUNT') or 0) > 0
    decision = resolve_resume(cfg, args.resume, run_inputs(cfg), args.allow_input_change,
                              restarted)
    say(f'train.py: {decision.message}')
    if cfg.get('resume'):
        drop_backbone_init(cfg)  # every weight comes from the checkpoint being resumed
    else:
        check_pretrained(cfg)
    return cfg, decision


def say(msg: str) -> None:
    from toolkit.launch import launch_rank
    if launch_rank() == 0:
        print(msg, flush=True)


def finished(cfg, meta) -> bool:
    """The checkpoint to resume (``meta``: its metadata, None for a new run) already ends the
    run: nothing to train, and no validation of its last epoch or iteration left to run (a stop
    or a kill during it: the resumed run validates it first)."""
    from toolkit.resume_policy import VAL_PENDING_KEY, schedule_end
    unit, end = schedule_end(cfg)
    return meta is not None and meta[unit] >= end and meta.get(VAL_PENDING_KEY) is None


def main(argv=None):
    try:
        _train(argv)
    finally:
        # The run is over (finished, refused or failed): a time-limit signal from now on is
        # ignored, also once CPython has put Python handlers back to their default action
        # (terminate) while shutting down; a finished job would fail with it.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _train(argv):
    from toolkit.console import QuietRunner, quiet_warnings, set_verbose
    from toolkit.batch_scaling import apply_lr_rule, set_ends_from_images
    from toolkit.loaders import stop_loader_workers
    args = parse_args(argv)
    set_verbose(args.verbose)
    quiet_warnings()
    cfg, decision = build_cfg(args)
    if args.check_inputs_only:
        state = ('finished' if finished(cfg, decision.meta) else
                 'resume' if decision.meta else 'new')
        print(f'{state}: {decision.message}', flush=True)
        return
    if finished(cfg, decision.meta):
        from toolkit.resume_policy import schedule_end
        unit, end = schedule_end(cfg)
        say(f'train.py: {cfg.work_dir} already finished its {end} {unit}s '
            f'({cfg.load_from}); nothing to train')
        return
    runner = QuietRunner.from_cfg(cfg)
    set_ends_from_images(runner)  # schedulers with end_images (tools/toolkit/batch_scaling.py)
    apply_lr_rule(runner)  # auto_scale_lr.rule, and a warning far from its base batch
    try:
        runner.train()
    finally:
        stop_loader_workers(runner)


if __name__ == '__main__':
    bootstrap.run(main)
