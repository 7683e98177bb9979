"""Draw what training feeds the model.

    python tools/browse_dataset.py CONFIG [--data-root DIR] [--split training] [--num 8]
        [--coco ANN_FILE IMAGES] [--out-dir DIR] [--cfg-options k=v ...] [--verbose]

A detection config: each labeled image (course or COCO layout, or --coco's annotation file and
image folder) after the train pipeline (resize, flip), its
ground-truth boxes drawn with the class names (mmdet's DetLocalVisualizer). A MoCo config: each
unlabeled image beside the two augmented views the model compares (original | view 1 | view 2).
Every sample gets the augmentation the first training epoch gives it (the per-sample seeds of
custom_modules/datasets/samplers.py), so the pictures are reproducible. DIR (default
work_dirs/browse/<config name>) gets <image name>.png for the first N images.
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
    p.add_argument('--data-root', help='dataset folder instead of the config\'s data_root')
    p.add_argument('--split', help='labeled split (detection configs; default: the config\'s)')
    p.add_argument('--coco', nargs=2, metavar=('ANN_FILE', 'IMAGES'),
                   help='COCO-format data: annotation file and image folder')
    p.add_argument('--num', type=int, default=8, help='images to draw (default 8)')
    p.add_argument('--out-dir', help='default: work_dirs/browse/<config name>')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    p.add_argument('--verbose', action='store_true', help='show third-party warnings too')
    return p.parse_args(argv)


def is_two_view(pipeline) -> bool:
    return any(t['type'].split('.')[-1] == 'MultiView' for t in pipeline)


def draw_boxes(item, out_file: str, visualizer) -> None:
    sample = item['data_samples']
    sample.gt_instances.bboxes = sample.gt_instances.bboxes.tensor  # HorizontalBoxes -> xyxy
    img = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # BGR -> RGB
    visualizer.add_datasample(osp.basename(out_file), img, sample, draw_pred=False,
                              out_file=out_file)


def draw_views(item, out_file: str) -> None:
    import mmcv
    import numpy as np
    views = [v.permute(1, 2, 0).numpy() for v in item['inputs']]  # BGR, as decoded
    h = views[0].shape[0]
    # as the pretraining loader decodes it (EXIF orientation not applied), beside its views
    original = mmcv.imread(item['data_samples'].img_path, flag='color_ignore_orientation')
    original = mmcv.imresize(original, (round(original.shape[1] * h / original.shape[0]), h))
    gap = np.full((h, 4, 3), 255, np.uint8)
    mmcv.imwrite(np.concatenate([original, gap, views[0], gap, views[1]], axis=1), out_file)


def main(argv=None):
    from mmengine.registry import DATASETS, init_default_scope

    from toolkit.config_edits import set_coco_files, set_data_root, setup_coco
    from toolkit.console import quiet_warnings, set_verbose
    from custom_modules.datasets.samplers import SampleIndex, sample_seed
    from custom_modules.errors import UserError
    from toolkit.checks import check_data_folders
    args = parse_args(argv)
    set_verbose(args.verbose)
    quiet_warnings()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    dataset_cfg = (cfg.get('train_dataloader') or {}).get('dataset')
    if not dataset_cfg:
        raise UserError(f'{args.config} has no training dataset to draw (an evaluation-only '
                        'config)')
    two_view = is_two_view(dataset_cfg.pipeline)
    if args.data_root:
        set_data_root(cfg, args.data_root, names=('train_dataloader', ))
    if args.split:
        if two_view:
            raise UserError('--split is for the labeled set of a detection config; a MoCo '
                            'config reads one unlabeled folder (--data-root)')
        dataset_cfg.split = args.split
    if args.coco:
        set_coco_files(cfg, 'train_dataloader', *args.coco)
    check_data_folders(cfg, names=('train_dataloader', ))
    setup_coco(cfg, names=('train_dataloader', ))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset = DATASETS.build(dataset_cfg)
    if not two_view:
        from mmdet.visualization import DetLocalVisualizer
        visualizer = DetLocalVisualizer(name='browse_dataset')
        visualizer.dataset_meta = dataset.metainfo
    out_dir = args.out_dir or osp.join('work_dirs', 'browse',
                                       osp.splitext(osp.basename(args.config))[0])
    os.makedirs(out_dir, exist_ok=True)
    seed = cfg.get('randomness', {}).get('seed') or 0
    num = min(args.num, len(dataset))
    for i in range(num):
        item = dataset[SampleIndex(i, sample_seed(seed, 0, i))]  # epoch 0's augmentation
        name = osp.splitext(osp.basename(item['data_samples'].img_path))[0]
        out_file = osp.join(out_dir, name + '.png')
        if two_view:
            draw_views(item, out_file)
        else:
            draw_boxes(item, out_file, visualizer)
    what = 'original | view 1 | view 2' if two_view else 'ground truth after the train pipeline'
    print(f'{num} of {len(dataset)} images drawn ({what}): {out_dir}')


if __name__ == '__main__':
    bootstrap.run(main)
