"""Pictures: tools/test.py --show-dir, tools/infer.py, tools/browse_dataset.py,
tools/plot_curves.py and train.py --tensorboard, on tiny generated data and an untrained detector
(its boxes are arbitrary, but they are drawn where the predictions say)."""
import json
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from custom_modules.datasets import LABELED_CLASSES
from custom_modules.errors import UserError
from toolkit.bootstrap import run as run_main
from helpers import REPO, run_tool, write_sample

DET = os.path.join(REPO, 'configs/faster_rcnn',
                   'faster-rcnn_r50-mocov2-pre_fpn_1xb4-demo-4e_synthetic.py')
TV = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-tv-e2e_fpn_1xb2_labeled-val.py')
MOCO = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py')
W, H = 128, 96
GREY = 120
# (box, label, colour of the object drawn 6 px inside it): box edges lie on flat grey
OBJECTS = (((20, 16, 60, 56), 'dog', (200, 30, 30)), ((76, 40, 116, 84), 'starfish', (30, 30, 200)))
# an untrained head scores every class ~1/101: keep the 3 best boxes of each image
FEW_BOXES = ['model.test_cfg.rcnn.score_thr=0.0', 'model.test_cfg.rcnn.max_per_img=3']


def flat_image(path, size=(W, H)):
    arr = np.full((size[1], size[0], 3), GREY, np.uint8)
    for (x1, y1, x2, y2), _, colour in OBJECTS:
        arr[y1 + 6:y2 - 6, x1 + 6:x2 - 6] = colour
    Image.fromarray(arr).save(path, quality=95)


def rgb(path):
    return np.asarray(Image.open(path).convert('RGB')).astype(int)


def edge_diff(drawn, original, box, dx=0):
    """Mean colour change along the left edge of ``box`` (x shifted by ``dx``)."""
    x1, y1, _, y2 = (int(round(v)) for v in box)
    x1 = min(max(x1, 0), original.shape[1] - 1)
    rows = slice(max(y1, 0), max(min(y2, original.shape[0]), y1 + 1))
    return np.abs(drawn[rows, x1 + dx] - original[rows, x1]).max(-1).mean()


def assert_one_line_error(err, code, *words):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    for w in words:
        assert w in lines[0], lines[0]


def tool_error(capsys, tool, argv):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_main(tool.main, argv)
    return capsys.readouterr().err, e.value.code


@pytest.fixture(scope='module')
def labeled(module_tmp):
    root = str(module_tmp('labeled'))
    for split, ids in (('training', (1, 2)), ('validation', (3, 4))):
        for i in ids:
            img, _ = write_sample(root, split, i, size=None, image_size=False,
                                  bboxes=[o[0] for o in OBJECTS], labels=[o[1] for o in OBJECTS])
            flat_image(img)
    return root


@pytest.fixture(scope='module')
def det_ckpt(demo_detector):
    assert demo_detector[1] == DET
    return demo_detector[0]


@pytest.fixture(scope='module')
def moco_ckpt(module_tmp):
    """A MoCo pretraining checkpoint's layout (only its keys matter to the checks)."""
    path = str(module_tmp('moco') / 'epoch_8.pth')
    torch.save(dict(state_dict={'backbone.conv1.weight': torch.zeros(1), 'queue': torch.zeros(1),
                                'momentum_encoder.conv1.weight': torch.zeros(1)}), path)
    return path


@pytest.fixture(scope='module')
def tested(labeled, det_ckpt, module_tmp):
    """tools/test.py --show-dir --out on the validation split, one image per batch."""
    import test as test_tool
    out = module_tmp('test')
    pkl, show = str(out / 'preds.pkl'), str(out / 'show')
    metrics = test_tool.main([
        DET, det_ckpt, '--data-root', labeled, '--split', 'validation', '--batch-size', '1',
        '--out', pkl, '--show-dir', show, '--score-thr', '0', '--work-dir', str(out / 'w'),
        '--cfg-options', *FEW_BOXES, 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False'])
    with open(pkl, 'rb') as f:
        preds = {os.path.basename(p['img_path']): p for p in pickle.load(f)}
    return show, pkl, preds, metrics


def test_test_py_show_dir_draws_ground_truth_and_predictions(tested, labeled):
    show, _, preds, _ = tested
    assert sorted(os.listdir(show)) == ['3.JPEG', '4.JPEG']
    for name in ('3.JPEG', '4.JPEG'):
        original = rgb(os.path.join(labeled, 'validation', 'images', name))
        drawn = rgb(os.path.join(show, name))
        assert drawn.shape == (H, 2 * W, 3)  # ground truth | predictions
        gt = drawn[:, :W]
        for box, _, _ in OBJECTS:
            assert edge_diff(gt, original, box) > 40, box
        assert np.abs(gt[2:10, 60:70] - original[2:10, 60:70]).max() < 12  # no box there
        boxes = preds[name]['pred_instances']['bboxes']
        assert len(boxes) == 3
        for box in boxes.tolist():
            assert edge_diff(drawn, original, box, dx=W) > 30, box


def test_infer_json_equals_test_predictions(tested, labeled, det_ckpt, tmp_path):
    import infer
    _, _, preds, _ = tested
    out = str(tmp_path / 'out')
    infer.main([DET, det_ckpt, os.path.join(labeled, 'validation', 'images'), '--out-dir', out,
                '--score-thr', '0', '--grid', str(tmp_path / 'grid.png'),
                '--cfg-options', *FEW_BOXES])
    assert sorted(os.listdir(out)) == ['3.json', '3.png', '4.json', '4.png']
    for i in (3, 4):
        with open(os.path.join(out, f'{i}.json')) as f:
            doc = json.load(f)
        pred = preds[f'{i}.JPEG']['pred_instances']
        dets = doc['detections']
        assert (doc['width'], doc['height']) == (W, H)
        assert [d['label_id'] for d in dets] == pred['labels'].tolist()
        assert [d['label'] for d in dets] == [LABELED_CLASSES[k] for k in pred['labels'].tolist()]
        np.testing.assert_allclose([d['bbox'] for d in dets], pred['bboxes'].numpy(), atol=1e-3)
        np.testing.assert_allclose([d['score'] for d in dets], pred['scores'].numpy(), rtol=1e-5)
        original = rgb(os.path.join(labeled, 'validation', 'images', f'{i}.JPEG'))
        drawn = rgb(os.path.join(out, f'{i}.png'))
        assert drawn.shape == original.shape
        for d in dets:
            assert edge_diff(drawn, original, d['bbox']) > 30, d
    grid = rgb(tmp_path / 'grid.png')
    assert grid.shape == (H, 2 * W + 4, 3)
    assert (grid[:, :W] == rgb(os.path.join(out, '3.png'))).all()


@pytest.mark.slow
def test_infer_reads_inside_a_squashfs_image(labeled, det_ckpt, tmp_path, capsys, monkeypatch):
    """The labeled set packed by Debian's mksquashfs: infer.py on a folder, a file and a glob
    inside the image writes what it writes for the unpacked files, and a path not in the image
    or a file that is no image is one error line."""
    from squashfs_tools import mksquashfs, mksquashfs_unavailable
    why = mksquashfs_unavailable()
    if why:
        pytest.skip(f'squashfs tests skipped: {why}')
    import infer
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))  # not the user's index cache
    image = mksquashfs(labeled, str(tmp_path / 'labeled.sqsh'))
    folder = os.path.join(labeled, 'validation', 'images')

    def run(name, *inputs):
        out = tmp_path / name
        infer.main([DET, det_ckpt, *inputs, '--out-dir', str(out), '--score-thr', '0',
                    '--cfg-options', *FEW_BOXES])
        return {f: (out / f).read_bytes() if f.endswith('.png') else
                {k: v for k, v in json.loads((out / f).read_text()).items() if k != 'image'}
                for f in sorted(os.listdir(out))}

    unpacked = run('folder', folder)
    assert sorted(unpacked) == ['3.json', '3.png', '4.json', '4.png']
    assert run('image', f'{image}/validation/images') == unpacked
    assert run('glob', f'{image}/validation/images/*.JPEG') == unpacked
    assert run('file', f'{image}/validation/images/4.JPEG') == \
        {k: v for k, v in unpacked.items() if k.startswith('4.')}
    err, code = tool_error(capsys, infer, [DET, det_ckpt, f'{image}/validation/nothing'])
    assert_one_line_error(err, code, "'validation/nothing' is not in the squashfs image", image)
    err, code = tool_error(capsys, infer, [DET, det_ckpt, f'{det_ckpt}/inner'])
    assert_one_line_error(err, code, det_ckpt)


def test_infer_above_every_score_draws_nothing(labeled, det_ckpt, tmp_path):
    import infer
    img = os.path.join(labeled, 'validation', 'images', '3.JPEG')
    infer.main([DET, det_ckpt, img, '--out-dir', str(tmp_path), '--score-thr', '1.0',
                '--cfg-options', *FEW_BOXES])
    with open(tmp_path / '3.json') as f:
        assert json.load(f)['detections'] == []
    # the picture is the image as the pipeline decodes it (Pillow), untouched
    assert (rgb(tmp_path / '3.png') == rgb(img)).all()


def test_infer_takes_the_converted_seed_checkpoint(labeled, tmp_path):
    """The seed's torchvision Faster R-CNN, converted, with the config made for it."""
    import infer
    import torchvision
    from model_converters import torchvision_frcnn_to_mmdet as tv2mm
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    torch.manual_seed(0)
    seed = FasterRCNN(_resnet_fpn_extractor(torchvision.models.resnet50(), 5), num_classes=101)
    e2e, converted = str(tmp_path / 'best_e2e_checkpoint.pth.tar'), str(tmp_path / 'mm.pth')
    torch.save(dict(epoch=37, state_dict={f'module.{k}': v for k, v in seed.state_dict().items()}),
               e2e)
    tv2mm.main([e2e, converted])
    out = str(tmp_path / 'out')
    infer.main([TV, converted, os.path.join(labeled, 'validation', 'images', '3.JPEG'),
                '--out-dir', out, '--score-thr', '0', '--cfg-options', *FEW_BOXES,
                'test_dataloader.dataset.pipeline.1.scale=(160,128)'])  # 800 px is slow on CPU
    with open(os.path.join(out, '3.json')) as f:
        dets = json.load(f)['detections']
    assert len(dets) == 3
    assert all(d['label'] == LABELED_CLASSES[d['label_id']] for d in dets)
    assert all(0 <= d['bbox'][0] <= d['bbox'][2] <= W and 0 <= d['bbox'][1] <= d['bbox'][3] <= H
               for d in dets)
    assert os.path.getsize(os.path.join(out, '3.png')) > 0


def test_infer_bad_inputs(labeled, det_ckpt, moco_ckpt, tmp_path, capsys):
    import infer
    img = os.path.join(labeled, 'validation', 'images', '3.JPEG')
    not_image = tmp_path / 'notes.JPEG'
    not_image.write_text('not a picture')
    (tmp_path / 'empty').mkdir()
    cases = [
        ([str(tmp_path / 'missing.JPEG')], det_ckpt, ['missing.JPEG: no such file or folder']),
        ([str(not_image)], det_ckpt, ['notes.JPEG is not an image']),
        ([str(tmp_path / 'empty')], det_ckpt, ['no image files in this folder']),
        ([str(tmp_path / 'nothing' / '*.png')], det_ckpt, ['no image file matches']),
        ([img], moco_ckpt, ['backbone-only checkpoint', '--pretrained']),
        ([img], str(tmp_path / 'missing.pth'), ['checkpoint file does not exist']),
    ]
    for inputs, ckpt, words in cases:
        assert_one_line_error(*tool_error(capsys, infer, [DET, ckpt, *inputs]), *words)


def test_infer_py_exits_2_with_one_line(labeled, moco_ckpt):
    r = run_tool('infer.py', DET, moco_ckpt, os.path.join(labeled, 'validation', 'images'),
                 timeout=300)
    assert 'Traceback' not in r.stderr + r.stdout
    assert_one_line_error(r.stderr, r.returncode, 'backbone-only checkpoint')


def test_browse_detection_draws_ground_truth_after_the_train_pipeline(labeled, tmp_path):
    import browse_dataset
    import mmcv
    out = str(tmp_path / 'b')
    browse_dataset.main([DET, '--data-root', labeled, '--num', '2', '--out-dir', out])
    assert sorted(os.listdir(out)) == ['1.png', '2.png']
    scale = 2  # the demo config resizes to fit 256 x 192
    for name in ('1', '2'):
        original = mmcv.imresize(rgb(os.path.join(labeled, 'training', 'images', f'{name}.JPEG'))
                                 .astype(np.uint8), (W * scale, H * scale)).astype(int)
        drawn = rgb(os.path.join(out, f'{name}.png'))
        assert drawn.shape == original.shape
        # RandomFlip may have flipped it: compare with the version that matches
        flipped = min((original, original[:, ::-1]), key=lambda o: np.abs(drawn - o).mean())
        is_flipped = flipped is not original
        for (x1, y1, x2, y2), _, _ in OBJECTS:
            box = [x1 * scale, y1 * scale, x2 * scale, y2 * scale]
            if is_flipped:
                box = [W * scale - box[2], box[1], W * scale - box[0], box[3]]
            assert edge_diff(drawn, flipped, box) > 40, (name, box)
        assert np.abs(drawn[4:12, 124:132] - flipped[4:12, 124:132]).max() < 12


def test_browse_moco_shows_the_two_views(tmp_path):
    import browse_dataset
    unlabeled = tmp_path / 'unlabeled'
    unlabeled.mkdir()
    for i in range(2):
        flat_image(unlabeled / f'{i}.PNG', size=(64, 64))
    out = str(tmp_path / 'b')
    browse_dataset.main([MOCO, '--data-root', str(unlabeled), '--num', '2', '--out-dir', out])
    assert sorted(os.listdir(out)) == ['0.png', '1.png']
    picture = rgb(os.path.join(out, '0.png'))
    assert picture.shape == (96, 3 * 96 + 2 * 4, 3)  # original | view 1 | view 2 at 96 px
    assert (picture[:, 96:100] == 255).all()  # the gaps
    view1, view2 = picture[:, 100:196], picture[:, 200:296]
    assert np.abs(view1 - view2).mean() > 5  # two different augmentations


def test_browse_bad_inputs(labeled, tmp_path, capsys):
    import browse_dataset
    assert_one_line_error(*tool_error(capsys, browse_dataset, [MOCO, '--data-root', str(tmp_path),
                                                              '--split', 'validation']), '--split')
    assert_one_line_error(*tool_error(capsys, browse_dataset, [DET, '--data-root', labeled,
                                                              '--split', 'val']),
                          "no split folder 'val'")


def write_run(work_dir, timestamp, loss0, epochs=(1, 2), iters_per_epoch=10, map0=0.1):
    """A scalars.json as mmengine's LoggerHook writes it: training records every 5 iterations,
    one validation record per epoch."""
    folder = os.path.join(work_dir, timestamp, 'vis_data')
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'scalars.json'), 'w') as f:
        for epoch in epochs:
            for it in range((epoch - 1) * iters_per_epoch + 5, epoch * iters_per_epoch + 1, 5):
                f.write(json.dumps(dict(lr=0.01, loss=loss0 / it, time=1.0, epoch=epoch,
                                        iter=it, step=it)) + '\n')
            f.write(json.dumps({'coco/bbox_mAP': map0 * epoch, 'coco/bbox_mAP_50': 0.5,
                                'data_time': 0.1, 'time': 0.2, 'step': epoch}) + '\n')


def test_plot_curves_overlays_runs(tmp_path):
    import plot_curves
    a, b = str(tmp_path / 'moco_init'), str(tmp_path / 'random_init')
    write_run(a, '20260101_000000', 10.0, epochs=(1, 2))
    write_run(a, '20260102_000000', 20.0, epochs=(2, 3))  # resumed at epoch 2: replaces it
    write_run(b, '20260101_000000', 30.0, epochs=(1, 2, 3))
    from toolkit.scalars import read_scalars
    train, val = read_scalars(a)
    assert sorted(train['loss']) == [5, 10, 15, 20, 25, 30]
    assert train['loss'][15] == 20.0 / 15 and train['loss'][5] == 10.0 / 5
    assert val['coco/bbox_mAP'] == {1: 0.1, 2: 0.2, 3: pytest.approx(0.3)}
    both, one = str(tmp_path / 'both.png'), str(tmp_path / 'one.png')
    plot_curves.main([a, b, '--labels', 'MoCo init', 'random init', '--out', both])
    plot_curves.main([a, '--keys', 'loss', 'lr', '--out', one])
    picture = np.asarray(Image.open(both).convert('RGB'))
    assert picture.shape[1] == 3 * 500  # loss, lr, bbox_mAP panels, 5 inches at 100 dpi

    def has(img, colour):  # matplotlib's first two line colours
        return (np.abs(img.astype(int) - colour).max(-1) < 30).sum() > 50
    assert has(picture, (31, 119, 180)) and has(picture, (255, 127, 14))
    single = np.asarray(Image.open(one).convert('RGB'))
    assert single.shape[1] == 2 * 500
    assert has(single, (31, 119, 180)) and not has(single, (255, 127, 14))


def handmade_predictions():
    """One image: a dog found, a starfish called a bird, a dog where there is nothing, a car
    below the score threshold."""
    dog, star = LABELED_CLASSES.index('dog'), LABELED_CLASSES.index('starfish')
    bird, car = LABELED_CLASSES.index('bird'), LABELED_CLASSES.index('car')
    return [dict(
        img_id=1, img_path='1.JPEG', ori_shape=(H, W),
        instances=[dict(bbox=[20., 16., 60., 56.], bbox_label=dog, ignore_flag=0),
                   dict(bbox=[76., 40., 116., 84.], bbox_label=star, ignore_flag=0)],
        pred_instances=dict(
            bboxes=torch.tensor([[20., 16., 60., 56.], [76., 40., 116., 84.], [0., 0., 10., 10.],
                                 [76., 40., 116., 84.]]),
            scores=torch.tensor([0.9, 0.8, 0.7, 0.1]),
            labels=torch.tensor([dog, bird, dog, car])))]


def test_per_class_ap_and_confusion_matrix(tmp_path):
    import csv

    import plot_curves
    samples = handmade_predictions()
    csv_path = str(tmp_path / 'classwise_ap.csv')
    assert plot_curves.evaluate(samples, LABELED_CLASSES, csv_path) == pytest.approx(0.5)
    with open(csv_path) as f:
        rows = {r['category']: r for r in csv.DictReader(f) if int(r['gt_boxes'])}
    assert {k: float(r['mAP']) for k, r in rows.items()} == {'dog': 1.0, 'starfish': 0.0}
    matrix = plot_curves.confusion_matrix(samples, len(LABELED_CLASSES), 0.3, 0.5)
    shown, names = plot_curves.shown_classes(matrix, LABELED_CLASSES, most=2)
    assert names == ['dog', 'starfish', 'other classes', 'background']
    # rows: ground truth, columns: detections (the bird is among 'other classes')
    assert shown.tolist() == [[1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]]


def test_plot_predictions_of_a_test_py_file(tested, tmp_path, capsys):
    import plot_curves
    _, pkl, _, metrics = tested
    out = str(tmp_path / 'p')
    plot_curves.main(['--predictions', pkl, '--out-dir', out])
    printed = capsys.readouterr().out
    for name in ('classwise_ap.csv', 'classwise_ap.png', 'confusion_matrix.png'):
        assert os.path.getsize(os.path.join(out, name)) > 0
    first = [line for line in printed.splitlines() if line.startswith(' Average Precision')][0]
    assert first.endswith(f'= {metrics["coco/bbox_mAP"]:.3f}')  # what test.py measured


def test_plot_curves_bad_inputs(tmp_path, capsys):
    import plot_curves
    not_pickle = tmp_path / 'preds.pkl'
    not_pickle.write_text('text')
    assert_one_line_error(*tool_error(capsys, plot_curves, [str(tmp_path)]),
                          'no <timestamp>/vis_data/scalars.json')
    assert_one_line_error(*tool_error(capsys, plot_curves, ['--predictions', str(not_pickle)]),
                          'not a tools/test.py --out file')
    write_run(str(tmp_path / 'run'), '20260101_000000', 1.0)
    assert_one_line_error(*tool_error(capsys, plot_curves, [str(tmp_path / 'run'), '--keys',
                                                           'accuracy']), 'they have: ')


@pytest.fixture
def unlabeled(tmp_path):
    folder = tmp_path / 'unlabeled'
    folder.mkdir()
    flat_image(folder / '0.PNG', size=(64, 64))
    return str(folder)


def test_tensorboard_switch(unlabeled, tmp_path, monkeypatch):
    from train import build_cfg, parse_args
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', types.ModuleType('tensorboard'))
    cfg, _ = build_cfg(parse_args([MOCO, '--data-root', unlabeled, '--work-dir',
                                   str(tmp_path / 'w'), '--tensorboard']))
    assert [b['type'] for b in cfg.visualizer.vis_backends] == ['LocalVisBackend',
                                                                'TensorboardVisBackend']


@pytest.mark.parametrize('extra, words', [
    (['--tensorboard'], 'pip install tensorboard'),
    (['--cfg-options', 'visualizer.vis_backends.0.type=TensorboardVisBackend'],
     'pip install tensorboard'),
    # DictAction makes strings of these, which mmengine would fail on once training runs
    (['--cfg-options', "visualizer.vis_backends=[dict(type='LocalVisBackend'),"
      "dict(type='TensorboardVisBackend')]"], 'add TensorBoard with --tensorboard'),
])
def test_tensorboard_missing_is_a_user_error(extra, words, unlabeled, tmp_path, monkeypatch):
    from train import build_cfg, parse_args
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)  # import fails
    with pytest.raises(UserError, match=words):
        build_cfg(parse_args([MOCO, '--data-root', unlabeled, '--work-dir', str(tmp_path / 'w'),
                              *extra]))
