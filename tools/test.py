"""Evaluate a detector checkpoint: COCO bbox AP as pycocotools computes it (faster-coco-eval).

    python tools/test.py CONFIG (CKPT | --best-of DIR [DIR ...]) [--data-root DIR]
        [--split validation] [--coco ANN_FILE IMAGES] [--batch-size 2] [--classwise] [--out preds.pkl] [--work-dir DIR]
        [--predict-on teacher|student]
        [--show-dir DIR [--score-thr 0.3]] [--cfg-options k=v ...] [--launcher L] [--verbose]

Prints pycocotools' 12-line summary (AP, AP50, AP75, APs/m/l, AR@1/10/100, ARs/m/l), as the
seed printed it, then on the course's data the AP the seed's and the peer's evaluation would
have printed for this model: the same without class 0 'cup or mug', which their torchvision
detectors could not detect (it shared the background's index). --best-of evaluates the checkpoint that scored best on the validation split
during training among the best_*.pth files of the given work folders (e.g. the three stages):
the seed reported its best checkpoint. The seed's flag names (--checkpoint-path,
--dataset-root, --dataset-split) are accepted too. --show-dir writes every evaluated image with
its ground truth (left) and the predictions scoring above --score-thr (right) drawn, named as
the image (mmdet's DetVisualizationHook; class names from the dataset's metainfo).
--data-root takes the course layout or a COCO-format folder (annotations/instances_<split>.json,
images in <split>/); --coco names a COCO annotation file and its images in any other layout. The
detector gets the data's number of classes; a checkpoint trained on another class list is
refused, naming both.
"""
import argparse
import os
import os.path as osp

from toolkit import bootstrap  # noqa: E402

bootstrap.setup()

from mmengine.config import Config, DictAction  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', help='full detector checkpoint (.pth)')
    p.add_argument('--checkpoint-path', dest='checkpoint_flag', help='same as CHECKPOINT')
    p.add_argument('--best-of', nargs='+', metavar='DIR',
                   help='evaluate the best-on-validation checkpoint of these work folders')
    p.add_argument('--data-root', '--dataset-root', dest='data_root',
                   help='labeled dataset root (holds <split>/images, <split>/labels)')
    p.add_argument('--split', '--dataset-split', dest='split', help='e.g. validation')
    p.add_argument('--coco', nargs=2, metavar=('ANN_FILE', 'IMAGES'),
                   help='COCO-format data: annotation file and image folder')
    p.add_argument('--batch-size', type=int, help='images per GPU')
    p.add_argument('--classwise', action='store_true', help='also print per-class AP')
    p.add_argument('--out', help='write raw predictions, with the class names of their labels, '
                   'to this .pkl file (tools/plot_curves.py --predictions reads it)')
    p.add_argument('--show-dir', help='write each image with ground truth and predictions drawn')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='--show-dir draws the predictions scoring above this (default 0.3)')
    p.add_argument('--predict-on', choices=('teacher', 'student'),
                   help='semi-supervised configs (configs/soft_teacher): the model evaluated '
                   "(default: the config's, the teacher, which Soft Teacher reports)")
    p.add_argument('--work-dir', help='default: work_dirs/<config name>')
    p.add_argument('--amp', action='store_true', help='mixed-precision inference')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    p.add_argument('--verbose', action='store_true',
                   help='also show the environment, config and hook dumps on the terminal')
    args = p.parse_args(argv)
    if sum(map(bool, (args.checkpoint, args.checkpoint_flag, args.best_of))) != 1:
        p.error('give the checkpoint once: CHECKPOINT, --checkpoint-path or --best-of')
    args.checkpoint = args.checkpoint or args.checkpoint_flag
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_cfg(args) -> Config:
    from custom_modules.engine.runner.checkpoint import best_checkpoint
    from toolkit.checkpoints import (check_checkpoint_classes, check_detector_checkpoint,
                                     choose_semi_model)
    from toolkit.config_edits import (data_name, dataset_classes, default_work_dir, set_coco_files,
                                      set_data_root, setup_coco)
    from custom_modules.datasets.classes import LABELED_CLASSES
    from toolkit.launch import set_launcher
    from toolkit.checks import check_amp, check_data_folders
    if args.best_of:
        args.checkpoint, args.why = best_checkpoint(args.best_of)
    kind = check_detector_checkpoint(args.checkpoint)
    check_amp(args.amp)
    cfg = Config.fromfile(args.config)
    set_launcher(cfg, args.launcher)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or default_work_dir(args.config)
    if args.best_of:
        args.why += _last_epoch(args.best_of, cfg)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.split:
        cfg.test_dataloader.dataset.split = args.split
    if args.data_root:
        set_data_root(cfg, args.data_root, names=('test_dataloader', ))
    if args.coco:
        set_coco_files(cfg, 'test_dataloader', *args.coco)
    if args.batch_size:
        cfg.test_dataloader.batch_size = args.batch_size
    if args.classwise:
        cfg.test_evaluator.classwise = True
    if args.amp:
        cfg.test_cfg.fp16 = True
    args.model_line = choose_semi_model(cfg, args.config, args.checkpoint, kind, args.predict_on)
    # weights come from the checkpoint: do not demand the backbone's pretraining file
    if cfg.model.get('backbone', {}).get('init_cfg'):
        cfg.model.backbone.init_cfg = None
    if args.out:
        cfg.test_evaluator = [cfg.test_evaluator,
                              dict(type='DumpDetResultsWithClasses', out_file_path=args.out)]
    if args.show_dir:
        # absolute: the hook puts a relative folder under work_dir/<timestamp>/, joining it
        # again at every batch
        cfg.default_hooks.visualization = dict(
            type='DetVisualizationHook', draw=True, score_thr=args.score_thr,
            test_out_dir=osp.abspath(args.show_dir))
    check_data_folders(cfg, names=('test_dataloader', ))
    setup_coco(cfg, names=('test_dataloader', ))
    classes = dataset_classes(cfg)
    check_checkpoint_classes(args.checkpoint, classes, data_name(cfg))
    if classes == LABELED_CLASSES:
        # the AP the seed's and the peer's evaluation would print (docs/seed-differences.md)
        evaluator = cfg.test_evaluator[0] if args.out else cfg.test_evaluator
        evaluator.seed_comparable_class = LABELED_CLASSES[0]
    return cfg


def _last_epoch(work_dirs, cfg) -> str:
    """The last validated epoch's score beside the best one's: choosing the best epoch on the
    validation split is slightly optimistic (detectron2 reports the last iteration)."""
    from toolkit.scalars import last_validation
    key = (cfg.get('default_hooks', {}).get('checkpoint') or {}).get('save_best')
    last = last_validation(work_dirs, key) if isinstance(key, str) else None
    if last is None:
        return ''
    epoch, value = last
    return (f'; the last validated epoch, {epoch}, scored {value:.4f} (the best of several '
            'epochs on the validation split is slightly optimistic)')


def main(argv=None):
    from toolkit.config_edits import data_name
    from toolkit.console import QuietRunner, quiet_warnings, set_verbose
    from toolkit.loaders import stop_loader_workers
    args = parse_args(argv)
    set_verbose(args.verbose)
    quiet_warnings()
    cfg = build_cfg(args)
    runner = QuietRunner.from_cfg(cfg)
    try:
        metrics = runner.test()
    finally:
        stop_loader_workers(runner)
    print(f'checkpoint: {args.checkpoint}' + (f' ({args.why})' if args.best_of else '')
          + (f'\n{args.model_line}' if args.model_line else '')
          + f'\ndataset: {data_name(cfg)}\nlogs: {runner.log_dir}'
          + (f'\npredictions: {args.out}' if args.out else '')
          + (f'\npictures: {osp.abspath(args.show_dir)}' if args.show_dir else ''))
    return metrics


if __name__ == '__main__':
    bootstrap.run(main)
