"""COCO values that mmdet would drop or crash on, on a tiny generated set: a zero or missing
``area`` is the box's area, a ``width``/``height`` that differs from the image file gives way to
the file's header, every box still dropped is counted by reason in the log, and a value of the
wrong type (``"area": null``, a width as a string) stops train.py and check_dataset.py with one
line naming the file and the entry."""
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from helpers import REPO

DET = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-scratch_fpn_1xb4-demo-4e_synthetic.py')


def _coco(root, images, annotations):
    """``root/annotations/instances_training.json`` and the images (64x48 unless said) in
    ``root/training``."""
    (root / 'annotations').mkdir(parents=True)
    (root / 'training').mkdir()
    rng = np.random.default_rng(0)
    for im in images:
        w, h = im.pop('real', (64, 48))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / 'training' / im['file_name'])
    data = dict(images=images, annotations=annotations,
                categories=[dict(id=7, name='kettle'), dict(id=9, name='drone')])
    ann = root / 'annotations' / 'instances_training.json'
    ann.write_text(json.dumps(data))
    return str(ann)


def _dataset(root):
    from mmengine.registry import init_default_scope

    from custom_modules.datasets.coco_det import CocoFormatDataset
    init_default_scope('mmdet')
    return CocoFormatDataset(data_root=str(root), split='training', pipeline=[],
                             filter_cfg=dict(filter_empty_gt=False))


def test_zero_area_and_small_json_size_keep_their_boxes_and_drops_are_counted(tmp_path,
                                                                             log_file):
    _coco(tmp_path, [dict(id=1, file_name='a.jpg', width=32, height=24),  # the file is 64x48
                     dict(id=2, file_name='b.jpg', width=64, height=48)], [
        dict(id=1, image_id=1, category_id=7, bbox=[40, 30, 10, 10], area=100),
        dict(id=2, image_id=2, category_id=7, bbox=[2, 2, 20, 10], area=0),
        dict(id=3, image_id=2, category_id=9, bbox=[5, 5, 8, 8]),
        dict(id=4, image_id=2, category_id=9, bbox=[5, 5, 0.5, 8], area=4),
        dict(id=5, image_id=2, category_id=9, bbox=[70, 5, 8, 8], area=64)])
    ds = _dataset(tmp_path)
    a, b = ds.get_data_info(0), ds.get_data_info(1)
    assert (a['width'], a['height']) == (64, 48)
    assert [i['bbox'] for i in a['instances']] == [[40, 30, 50, 40]]
    assert [i['bbox'] for i in b['instances']] == [[2, 2, 22, 12], [5, 5, 13, 13]]
    log = log_file.read_text()
    assert re.search(r'1 x width/height differs from the image file; the file\'s size used '
                     r'\(e\.g\. images\[0\] \(id 1\): 32x24 in the JSON, 64x48 in \S+a\.jpg\)',
                     log), log
    assert re.search(r'1 x area 0 or less; the box\'s area used \(e\.g\. annotations\[1\] '
                     r'\(id 2\)\)', log), log
    assert re.search(r'1 x box under 1 pixel wide or high dropped \(e\.g\. annotations\[3\] '
                     r'\(id 4\)\)', log), log
    assert re.search(r'1 x box outside the image dropped \(e\.g\. annotations\[4\] \(id 5\)\)',
                     log), log
    assert re.search(r'2 images \(0 without annotations\), 3 boxes of 2 classes', log), log


@pytest.mark.parametrize('where,edit,message', [
    ('annotations', dict(area=None), r'annotations\[0\] \(id 1\): area None is not a number'),
    ('images', dict(width='64'), r"images\[0\] \(id 1\): width '64' is not a positive number"),
    ('annotations', dict(iscrowd='no'), r"annotations\[0\] \(id 1\): iscrowd 'no' is not 0 or 1"),
])
def test_a_value_of_the_wrong_type_is_one_error_line(tmp_path, capsys, where, edit, message):
    import check_dataset
    import train as train_tool
    from toolkit.bootstrap import run as run_main
    images = [dict(id=1, file_name='a.jpg', width=64, height=48)]
    annotations = [dict(id=1, image_id=1, category_id=7, bbox=[4, 4, 20, 20], area=400)]
    dict(images=images, annotations=annotations)[where][0].update(edit)
    ann = _coco(tmp_path / 'data', images, annotations)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_main(train_tool.main, [DET, '--data-root', str(tmp_path / 'data'),
                                   '--work-dir', str(tmp_path / 'w')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and re.fullmatch(f'error: {re.escape(ann)}: {message}\n', err), err
    assert check_dataset.main(['--coco', ann, str(tmp_path / 'data' / 'training')]) == 1
    out = capsys.readouterr().out
    assert re.search(f'^    {re.escape(ann)}: {message}$', out, re.M), out
    assert 'Traceback' not in out


def test_test_py_scores_coco_data_against_the_users_own_file(tmp_path):
    """The evaluator tools/test.py builds for COCO data scores against the annotation file
    itself, as pycocotools' COCOeval does: segmentation areas (not box areas) decide small /
    medium / large, crowd boxes are crowd regions, and a box with "ignore" set is what COCOeval
    makes of it."""
    import contextlib
    import io

    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import DATASETS, METRICS
    from mmengine.structures import InstanceData
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from toolkit.config_edits import set_coco_files, setup_coco
    images = [dict(id=i, file_name=f'{i}.jpg', width=200, height=160, real=(200, 160))
              for i in (1, 2, 3)]
    annotations, k = [], 0
    rng = np.random.default_rng(1)
    for im in (1, 2, 3):
        for j in range(5):
            k += 1
            w, h = float(rng.integers(20, 90)), float(rng.integers(20, 70))
            x, y = float(rng.integers(0, 200 - w)), float(rng.integers(0, 160 - h))
            # a mask covering part of the box: its area, not the box's, decides the size range
            a = dict(id=k, image_id=im, category_id=(7, 9)[j % 2], bbox=[x, y, w, h],
                     area=w * h * float(rng.uniform(0.2, 0.9)), iscrowd=0)
            if k == 4:
                a['iscrowd'] = 1
            if k in (7, 12):
                a['ignore'] = 1
            annotations.append(a)
    ann = _coco(tmp_path, images, annotations)
    cfg = Config.fromfile(DET)
    set_coco_files(cfg, 'test_dataloader', ann, str(tmp_path / 'training'))
    setup_coco(cfg, names=('test_dataloader', ))
    init_default_scope('mmdet')
    ds = DATASETS.build(cfg.test_dataloader.dataset)
    metric = METRICS.build(cfg.test_evaluator)
    metric.dataset_meta = ds.metainfo
    dets = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        mine = [a for a in annotations if a['image_id'] == info['img_id']]
        boxes, scores, labels = [], [], []
        for a in mine + mine[:2]:  # a detection near every box, and two false ones
            x, y, w, h = a['bbox']
            dx = float(rng.normal(0, 3)) if len(boxes) < len(mine) else 40.0
            boxes.append([x + dx, y + dx, x + w + dx, y + h])
            scores.append(float(rng.uniform(0.1, 1)))
            labels.append((7, 9).index(a['category_id']))
        for b, s, lab in zip(boxes, scores, labels):
            dets.append(dict(image_id=info['img_id'], category_id=(7, 9)[lab], score=s,
                             bbox=[b[0], b[1], b[2] - b[0], b[3] - b[1]]))
        # the data sample test.py's loop hands the evaluator: the test pipeline's, predictions added
        sample = ds[i]['data_samples']
        sample.gt_instances.bboxes = sample.gt_instances.bboxes.tensor  # as the preprocessor does
        sample.pred_instances = InstanceData(bboxes=torch.tensor(boxes),
                                             scores=torch.tensor(scores),
                                             labels=torch.tensor(labels))
        metric.process({}, [sample.to_dict()])
    with contextlib.redirect_stdout(io.StringIO()):
        got = metric.compute_metrics(metric.results)
        gt = COCO(ann)
        ev = COCOeval(gt, gt.loadRes(dets), 'bbox')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
    assert [got[f'bbox_{n}'] for n in names] == [round(float(v), 3) for v in ev.stats[:6]], \
        (got, ev.stats[:6])


def _exif_jpeg(path, orientation, size=(40, 24)):
    """A noise JPEG stored ``size`` (width, height) with EXIF ``orientation``; its stored pixels."""
    arr = np.random.default_rng(orientation).integers(0, 255, (size[1], size[0], 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, format='JPEG', quality=95, exif=exif)


def test_exif_orientation_follows_the_frame_the_json_sizes_describe(tmp_path, log_file, capsys):
    """COCO boxes are in the frame the JSON's width/height describe: the stored pixels when they
    are the stored size, the displayed (EXIF-oriented) image when they are the rotated size, and
    the displayed image where the JSON cannot tell (orientation 3 keeps the size; no sizes).
    The dataset decides per image when it reads the header, and the configs' loader, which
    ignores EXIF for the course layout, follows that decision."""
    from mmengine.dataset import Compose
    from PIL import ImageOps
    # (orientation, width/height in the JSON, EXIF applied); every file is stored 40x24
    cases = [(6, (40, 24), False), (6, (24, 40), True), (8, (40, 24), False),
             (8, (24, 40), True), (3, (40, 24), True), (6, None, True), (8, None, True),
             (3, None, True), (1, (40, 24), False)]
    images = []
    for k, (orientation, size, _) in enumerate(cases, 1):
        im = dict(id=k, file_name=f'{k}.jpg')
        if size:
            im.update(width=size[0], height=size[1])
        images.append(im)
    _coco(tmp_path, [dict(im) for im in images],
          [dict(id=k, image_id=k, category_id=7, bbox=[2, 3, 10, 12], area=120)
           for k in range(1, len(cases) + 1)])
    for k, (orientation, _, _) in enumerate(cases, 1):
        _exif_jpeg(tmp_path / 'training' / f'{k}.jpg', orientation)
    ds = _dataset(tmp_path)
    ds.pipeline = Compose([dict(type='LoadImageNamed', imdecode_backend='pillow',
                                color_type='color_ignore_orientation'),
                           dict(type='LoadAnnotations', with_bbox=True)])
    for k, (orientation, size, oriented) in enumerate(cases, 1):
        with Image.open(tmp_path / 'training' / f'{k}.jpg') as f:
            want = np.asarray((ImageOps.exif_transpose(f) if oriented else f).convert('RGB'))
        item = ds[k - 1]
        what = f'orientation {orientation}, JSON size {size}'
        assert (item['width'], item['height']) == (want.shape[1], want.shape[0]), what
        assert np.array_equal(item['img'], want[..., ::-1]), what
        assert item['gt_bboxes'].tensor.tolist() == [[2, 3, 12, 15]], what
    log = log_file.read_text()
    assert 'width/height differs' not in log, log
    assert re.search(r'6 x EXIF orientation applied', log), log
    assert re.search(r'2 x EXIF orientation not applied', log), log
    # check_dataset compares the sizes and boxes in the same frame
    import check_dataset
    ann = str(tmp_path / 'annotations' / 'instances_training.json')
    assert check_dataset.main(['--coco', ann, str(tmp_path / 'training')]) == 0


def test_the_parsed_file_is_freed_once_the_dataset_is_indexed(tmp_path):
    """The parsed JSON (hundreds of MB for a large set) is not kept after indexing: forked loader
    workers would otherwise each copy its pages (tools/benchmarks/bench_coco_memory.py)."""
    import gc
    import weakref

    from custom_modules.datasets.coco_det import read_coco
    ann = _coco(tmp_path, [dict(id=1, file_name='a.jpg', width=64, height=48)],
                [dict(id=1, image_id=1, category_id=7, bbox=[4, 4, 20, 20], area=400)])
    parsed = weakref.ref(read_coco(ann))  # as the tools read it before building the dataset
    ds = _dataset(tmp_path)
    ds.full_init()
    gc.collect()
    assert parsed() is None, 'the parsed annotation file is still referenced'
    assert ds.get_data_info(0)['instances'][0]['bbox'] == [4, 4, 24, 24]
    assert read_coco(ann).classes == ('kettle', 'drone')  # read again when asked
