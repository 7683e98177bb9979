"""Train any config of this repository (MoCo v2 pretraining or Faster R-CNN fine-tuning).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--allow-input-change]
        [--amp] [--data-root DIR] [--pretrained MOCO_CKPT] [--cfg-options k=v ...] [--launcher L]
"""
import argparse
import os
import os.path as osp
import signal
import sys

# Slurm's time-limit signal (sbatch --signal=USR1@...) kills by default; one arriving before
# training starts changes nothing (TimeLimitHook takes it over once the run trains)
signal.signal(signal.SIGUSR1, signal.SIG_IGN)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # so custom_imports finds custom_modules from any working directory

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config')
    p.add_argument('--work-dir', help='default: work_dirs/<config name>')
    p.add_argument('--resume', nargs='?', const='auto',
                   help='resume from PATH, or (no value) from the latest resume point in '
                   'work_dir if it was trained from the same inputs')
    p.add_argument('--allow-input-change', action='store_true',
                   help='resume work_dir although its config, data or checkpoints changed')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision')
    p.add_argument('--data-root', help='dataset folder instead of the config\'s data_root')
    p.add_argument('--pretrained', help='MoCo checkpoint for the detector backbone')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_cfg(args) -> Config:
    from custom_modules.cli import (check_pretrained, default_work_dir, drop_backbone_init,
                                    set_data_root, set_launcher, set_pretrained)
    from custom_modules.resume_policy import resolve_resume, run_inputs
    cfg = Config.fromfile(args.config)
    set_launcher(cfg, args.launcher)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or default_work_dir(args.config)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if args.pretrained:
        set_pretrained(cfg, args.pretrained)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    restarted = int(os.environ.get('SLURM_RESTART_COUNT') or 0) > 0
    decision = resolve_resume(cfg, args.resume, run_inputs(cfg), args.allow_input_change,
                              restarted)
    print(f'train.py: {decision}', flush=True)
    if cfg.get('resume'):
        drop_backbone_init(cfg)  # every weight comes from the checkpoint being resumed
    else:
        check_pretrained(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    runner = Runner.from_cfg(build_cfg(args))
    runner.train()


if __name__ == '__main__':
    main()
