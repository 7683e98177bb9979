"""Run a detector on any images: draw its predictions and write them as JSON.

    python tools/infer.py CONFIG CKPT INPUT [INPUT ...] [--out-dir DIR] [--score-thr 0.3]
        [--device cpu|cuda] [--num N] [--grid FILE.png] [--data-root DIR | --coco ANN IMAGES]
        [--cfg-options k=v ...] [--verbose]

INPUT: an image, a folder (its images; sub-folders are not searched) or a quoted glob
('imgs/*.JPEG', 'data/**/*.PNG'); each may go through a squashfs image as --data-root does
('labeled.sqsh/validation/images', 'labeled.sqsh/validation/images/1*.JPEG', where '*' also
crosses '/'), read without unpacking. For every image, DIR (default work_dirs/infer) gets
<name>.png, the image with the predictions scoring above --score-thr drawn (class names: those
the checkpoint was trained on; --data-root / --coco name a dataset whose classes the checkpoint
must have, as tools/test.py checks), and <name>.json:

    {"image": PATH, "width": W, "height": H, "score_thr": T,
     "detections": [{"bbox": [x1, y1, x2, y2], "label": "dog", "label_id": 4, "score": 0.91}, ...]}

boxes in pixels of the original image, in the model's order (highest score first); the same
predictions as tools/test.py --out for that image (test.py with --batch-size 1: images padded
together in a batch move the features slightly). --score-thr 0 keeps every detection the model
returns. --grid also tiles the pictures into one image.

CKPT is a detector checkpoint written by tools/train.py, or the seed's torchvision Faster R-CNN
converted by tools/model_converters/torchvision_frcnn_to_mmdet.py (use it with
configs/faster_rcnn/faster-rcnn_r50-tv-e2e_fpn_1xb2_labeled-val.py).
"""
import argparse
import fnmatch
import glob
import io
import json
import math
import os
import os.path as osp
import re

from toolkit import bootstrap  # noqa: E402

bootstrap.setup()

from mmengine.config import Config, DictAction  # noqa: E402

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint', help='detector checkpoint (.pth)')
    p.add_argument('inputs', nargs='+', metavar='INPUT', help='image, folder or quoted glob')
    p.add_argument('--out-dir', default='work_dirs/infer', help='default: work_dirs/infer')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='draw and write the detections scoring above this (default 0.3)')
    p.add_argument('--device', choices=['cpu', 'cuda'],
                   help='default: cuda when a GPU is visible, else cpu')
    p.add_argument('--num', type=int, help='only the first N images (in name order)')
    p.add_argument('--grid', metavar='FILE.png', help='also tile the pictures into this image')
    p.add_argument('--data-root', help='labeled data (course or COCO layout) the checkpoint was '
                   'trained for: its class names, checked against the checkpoint')
    p.add_argument('--coco', nargs=2, metavar=('ANN_FILE', 'IMAGES'),
                   help='the same for a COCO annotation file and its image folder')
    p.add_argument('--predict-on', choices=('teacher', 'student'),
                   help='semi-supervised configs (configs/soft_teacher): the model that predicts '
                   "(default: the config's, the teacher)")
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    p.add_argument('--verbose', action='store_true', help='show third-party warnings too')
    return p.parse_args(argv)


def _natural(path: str):
    # 9.JPEG before 10.JPEG
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', path)]


def _in_squashfs_image(item: str):
    """The ``sqsh://`` paths of the images that ``item`` names through a squashfs image (the
    image itself or a folder in it: that folder's images; a file in it; a glob), in name order;
    None when ``item`` is a path of this filesystem (an image file too is a regular file)."""
    from custom_modules.fileio.sqsh_backend import SCHEME
    from custom_modules.fileio.squashfs import open_image, split_image_path
    from custom_modules.errors import UserError
    if osp.exists(item) and not (osp.isfile(item) and item.endswith('.sqsh')):
        return None
    found = split_image_path(item)  # a glob's magic after the image stays in the inner path
    if found is None:
        return None
    image_path, inner = found
    image = open_image(image_path)  # a file that is no squashfs image: one line naming it
    if glob.has_magic(inner):
        files = [f for f in image.files('') if fnmatch.fnmatchcase(f, inner)]
    elif image.isdir(inner):
        files = [f'{inner}/{n}'.lstrip('/') for n, is_dir in image.listdir(inner) if not is_dir]
    elif image.isfile(inner):
        files = [inner]
    else:
        raise UserError(f'{item}: {inner!r} is not in the squashfs image {image_path}')
    files = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise UserError(f'{item}: no image file in {image_path} (a folder\'s sub-folders are '
                        f'not searched: give a glob such as "{item}/*/*.JPEG")')
    return [f'{SCHEME}{osp.abspath(image_path)}/{f}' for f in sorted(files, key=_natural)]


def find_images(inputs, num=None) -> list:
    """The image files named by ``inputs`` (files, folders, globs), in name order, each once;
    a name that finds nothing, or a file that is not an image, is a UserError."""
    from mmengine import fileio
    from PIL import Image

    from custom_modules.fileio.sqsh_backend import is_sqsh_uri
    from custom_modules.errors import UserError
    found = []
    for item in inputs:
        in_image = _in_squashfs_image(item)
        if in_image is not None:
            files = in_image
        elif osp.isdir(item):
            files = [osp.join(item, f) for f in os.listdir(item)
                     if f.lower().endswith(IMAGE_EXTENSIONS) and osp.isfile(osp.join(item, f))]
            if not files:
                raise UserError(f'{item}: no image files in this folder (sub-folders are not '
                                f'searched: give a glob such as "{item}/**/*.JPEG")')
        elif glob.has_magic(item):
            files = [f for f in glob.glob(item, recursive=True)
                     if f.lower().endswith(IMAGE_EXTENSIONS) and osp.isfile(f)]
            if not files:
                raise UserError(f'{item}: no image file matches this pattern')
        elif osp.isfile(item):
            files = [item]
        else:
            raise UserError(f'{item}: no such file or folder')
        found += sorted(files, key=_natural)
    found = list(dict.fromkeys(f if is_sqsh_uri(f) else osp.abspath(f) for f in found))[:num]
    for path in found:  # the header only: a bad file fails here, before the model is built
        try:
            with Image.open(io.BytesIO(fileio.get(path)) if is_sqsh_uri(path) else path):
                pass
        except Exception as e:
            raise UserError(f'{path} is not an image that can be read ({type(e).__name__}: '
                            f'{e})') from e
    return found


def load_detector(cfg: Config, checkpoint: str, device: str, data_given: bool = False,
                  predict_on: str | None = None):
    """The config's detector with every weight from ``checkpoint`` (a UserError when they do not
    fit each other), named with the classes the checkpoint was trained on; with ``data_given``
    (--data-root / --coco), or for a checkpoint that does not record them, the classes of the
    config's test dataset, which the checkpoint must have been trained on. A semi-supervised
    config's teacher predicts, or ``predict_on``; the line saying which is printed."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from toolkit.checkpoints import (check_checkpoint_classes, check_detector_checkpoint,
                                     checkpoint_classes, choose_semi_model, load_state_dict_file)
    from toolkit.config_edits import (data_name, dataset_classes, drop_backbone_init,
                                      set_num_classes)
    from custom_modules.datasets.classes import palette
    from custom_modules.errors import UserError
    model_line = choose_semi_model(cfg, cfg.filename, checkpoint,
                                   check_detector_checkpoint(checkpoint), predict_on)
    if model_line:
        print(model_line, flush=True)
    classes = checkpoint_classes(checkpoint)
    if data_given or classes is None:
        classes = dataset_classes(cfg)
        check_checkpoint_classes(checkpoint, classes, data_name(cfg))
    set_num_classes(cfg, len(classes))
    drop_backbone_init(cfg)  # every weight comes from the checkpoint
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    state = {re.sub(r'^module\.', '', k): v for k, v in load_state_dict_file(checkpoint).items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape: e.g. another number of classes
        detail = '; '.join(line.strip() for line in str(e).splitlines()[1:3])
        raise UserError(f'{checkpoint} does not fit the model of {cfg.filename}: {detail}') from e
    if missing or unexpected:
        raise UserError(f'{checkpoint} does not fit the model of {cfg.filename}: '
                        f'{len(missing)} weights missing (e.g. {missing[:2]}), {len(unexpected)} '
                        f'unexpected (e.g. {unexpected[:2]})')
    model.dataset_meta = dict(classes=classes, palette=palette(len(classes)))
    model.cfg = cfg  # inference_detector reads the pipeline from it
    return model.to(device).eval()


def tile(images, gap: int = 4):
    """Images (H x W x 3, sizes may differ) in a near-square grid on white."""
    import numpy as np
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    h = max(i.shape[0] for i in images) + gap
    w = max(i.shape[1] for i in images) + gap
    grid = np.full((rows * h - gap, cols * w - gap, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * h:r * h + img.shape[0], c * w:c * w + img.shape[1]] = img
    return grid


def main(argv=None):
    import mmcv
    import torch
    from mmcv.transforms import Compose
    from mmdet.apis import inference_detector
    from mmdet.visualization import DetLocalVisualizer
    from mmengine import fileio

    from toolkit.console import quiet_warnings, set_verbose
    from custom_modules.datasets.transforms.loading import orientation_flag
    from custom_modules.fileio.sqsh_backend import SCHEME, is_sqsh_uri
    from custom_modules.errors import UserError
    args = parse_args(argv)
    set_verbose(args.verbose)
    quiet_warnings()
    images = find_images(args.inputs, args.num)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise UserError('--device cuda: no CUDA GPU is visible here: use --device cpu')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    from toolkit.config_edits import set_coco_files, set_data_root, setup_coco
    if args.data_root:
        set_data_root(cfg, args.data_root, names=('test_dataloader', ))
    if args.coco:
        set_coco_files(cfg, 'test_dataloader', *args.coco)
    setup_coco(cfg, names=('test_dataloader', ), check_files=False)
    model = load_detector(cfg, args.checkpoint, device, bool(args.data_root or args.coco),
                          args.predict_on)
    composed = Compose(cfg.test_dataloader.dataset.pipeline)
    # an image of a COCO set given by --data-root / --coco is read in the frame its dataset
    # reads it (EXIF orientation applied or not, per image); others as the loader's color_type
    ds = cfg.test_dataloader.dataset
    exif = {}
    if (args.data_root or args.coco) and ds.get('type') == 'CocoFormatDataset':
        from custom_modules.datasets.coco_det import exif_rules
        exif = exif_rules(ds['ann_file'], ds['data_prefix']['img'], images)

    def pipeline(data):
        apply = exif.get(data.get('img_path'))
        return composed(data if apply is None else dict(data, apply_exif_orientation=apply))

    # the picture is decoded as the pipeline's loader decodes (e.g. Pillow, EXIF orientation
    # ignored), so the boxes sit on the pixels the model saw
    load = cfg.test_dataloader.dataset.pipeline[0]
    flag = load.get('color_type', 'color')
    visualizer = DetLocalVisualizer(name='infer')
    visualizer.dataset_meta = model.dataset_meta
    classes = model.dataset_meta['classes']
    local = [p[len(SCHEME):] if is_sqsh_uri(p) else p for p in images]
    root = osp.commonpath([osp.dirname(p) for p in local])
    pictures = []
    for path, local_path in zip(images, local):
        try:
            result = inference_detector(model, path, test_pipeline=pipeline)
        except OSError as e:  # LoadImageNamed: a truncated or corrupt file, named
            raise UserError(str(e)) from e
        pred = result.pred_instances
        pred = pred[pred.scores > args.score_thr].cpu()
        name = osp.splitext(osp.relpath(local_path, root))[0]
        png, js = (osp.join(args.out_dir, name + ext) for ext in ('.png', '.json'))
        os.makedirs(osp.dirname(png), exist_ok=True)
        img = mmcv.imfrombytes(fileio.get(path), channel_order='rgb',
                               flag=orientation_flag(flag, exif.get(path)),
                               backend=load.get('imdecode_backend'))
        result.pred_instances = pred
        visualizer.add_datasample(name, img, result, draw_gt=False, pred_score_thr=args.score_thr,
                                  out_file=png)
        if args.grid:
            pictures.append(visualizer.get_image())
        h, w = img.shape[:2]
        detections = [dict(bbox=b, label=classes[k], label_id=k, score=s) for b, k, s in
                      zip(pred.bboxes.tolist(), pred.labels.tolist(), pred.scores.tolist())]
        with open(js, 'w') as f:
            json.dump(dict(image=path, width=w, height=h, score_thr=args.score_thr,
                           detections=detections), f)
        print(f'{path}: {len(detections)} detections above {args.score_thr} -> {png}, {js}',
              flush=True)
    if args.grid:
        os.makedirs(osp.dirname(osp.abspath(args.grid)), exist_ok=True)
        mmcv.imwrite(tile(pictures)[..., ::-1], args.grid)
        print(f'grid of the {len(pictures)} pictures: {args.grid}')


if __name__ == '__main__':
    bootstrap.run(main)
