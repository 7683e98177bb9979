"""The seed's checkpoints: its torchvision Faster R-CNN, converted, detects in mmdet what it
detects in torchvision; the converters refuse other files; our MoCo backbone exports to
torchvision's ResNet-50."""
import os
import pickle
import re

import pytest
import torch
import torchvision
import yaml
from mmdet.registry import TASK_UTILS, TRANSFORMS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.registry import MODELS
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou
from torchvision.ops.misc import FrozenBatchNorm2d

import custom_modules  # noqa: F401
from toolkit.checkpoints import check_detector_checkpoint
from custom_modules.datasets import LABELED_CLASSES
from make_synthetic_data import make_dataset
from model_converters import mocov2_to_torchvision as moco2tv
from model_converters import torchvision_frcnn_to_mmdet as tv2mm


TV_CONFIG = tv2mm.DEFAULT_CONFIG
NUM_VAL = 4  # resized to 800 px on the short side: ~10 s per image and model on 2 CPU cores
# fitted class scores: peaked, background pushed down, so most images reach the 100-detection
# cap and the cut at 100 is compared too
CLS_GAIN, BG_SHIFT = 32.0, 28.0


def seed_model(norm_layer=None) -> FasterRCNN:
    """The detector as the seed's demo_mocov2_fpn.py builds it (its BatchNorm2d kept in eval
    mode; FrozenBatchNorm2d is torchvision's own default)."""
    resnet = torchvision.models.resnet50(num_classes=2048, norm_layer=norm_layer)
    return FasterRCNN(_resnet_fpn_extractor(resnet, 5), num_classes=101)


def save_e2e(model: FasterRCNN, path: str) -> str:
    """The seed's e2e checkpoint format (DDP's 'module.' prefix)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0003, momentum=0.9)
    torch.save(dict(epoch=37, arch='FasterRCNN', backbone_path='checkpoint_0100.pth.tar',
                    state_dict={f'module.{k}': v for k, v in model.state_dict().items()},
                    optimizer=optimizer.state_dict()), path)
    return path


def read_split(root: str, split: str = 'validation'):
    """(id, RGB [0, 1] tensor as the seed's ToTensor gives it, xyxy boxes, course labels 0..99)."""
    out = []
    labels_dir = os.path.join(root, split, 'labels')
    for i in sorted(int(f[:-4]) for f in os.listdir(labels_dir)):
        doc = yaml.safe_load(open(os.path.join(labels_dir, f'{i}.yml')))
        img = Image.open(os.path.join(root, split, 'images', f'{i}.JPEG')).convert('RGB')
        out.append((i, torchvision.transforms.functional.to_tensor(img),
                    torch.tensor(doc['bboxes'], dtype=torch.float32),
                    torch.tensor([LABELED_CLASSES.index(n) for n in doc['labels']])))
    return out


def ridge(x, y, rel=1e-2):
    """Least squares with a small ridge: (weight [out, in], bias [out]) of y ~ x."""
    x = torch.cat([x, x.new_ones(len(x), 1)], 1)
    lam = rel * x.pow(2).sum() / x.shape[1]
    w = torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1]), x.T @ y)
    return w[:-1].T.contiguous(), w[-1]


@torch.no_grad()
def fit_to_images(model: FasterRCNN, images, targets) -> None:
    """Give a random-weight model detections that hit these images' boxes: BatchNorm statistics
    from the images, then the RPN's objectness/deltas and the box predictor fitted in closed form
    on the features. Labels as the course's dataset.py gives them (0 = cup or mug doubles as
    background), so the default --labels course mapping is the one under test."""
    for m in model.backbone.body.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    model.eval()
    model.backbone.body.train()
    for img in images:
        model.backbone.body(model.transform.normalize(img)[None])
    model.eval()
    image_list, targets = model.transform(images, [dict(t) for t in targets])
    feats = model.backbone(image_list.tensors)
    levels = list(feats.values())
    anchors = model.rpn.anchor_generator(image_list, levels)
    head = model.rpn.head
    num_a = head.cls_logits.out_channels
    hidden = torch.cat([head.conv(f).permute(0, 2, 3, 1).flatten(1, 2) for f in levels], 1)
    gen = torch.Generator().manual_seed(0)
    xs, objectness, deltas, positive = [], [], [], []
    for i, t in enumerate(targets):
        best, idx = box_iou(anchors[i], t['boxes']).max(1)
        enc = model.rpn.box_coder.encode_single(t['boxes'][idx], anchors[i]).view(-1, num_a, 4)
        pos = (best >= 0.5).view(-1, num_a)
        # every location with a positive anchor, and a random sample of the rest
        keep = pos.any(1) | (torch.rand(len(pos), generator=gen) < 0.05)
        xs.append(hidden[i][keep])
        objectness.append(pos[keep].float())
        deltas.append(enc[keep])
        positive.append(pos[keep])
    x, pos, enc = torch.cat(xs), torch.cat(positive), torch.cat(deltas)
    w, b = ridge(x, torch.cat(objectness))
    head.cls_logits.weight.copy_(w[:, :, None, None])
    head.cls_logits.bias.copy_(b)
    for a in range(num_a):
        w, b = ridge(x[pos[:, a]], enc[pos[:, a], a])
        head.bbox_pred.weight[4 * a:4 * a + 4] = w[:, :, None, None]
        head.bbox_pred.bias[4 * a:4 * a + 4] = b

    proposals, _ = model.rpn(image_list, feats)
    x = model.roi_heads.box_head(
        model.roi_heads.box_roi_pool(feats, proposals, image_list.image_sizes))
    labels, enc = [], []
    for p, t in zip(proposals, targets):
        best, idx = box_iou(p, t['boxes']).max(1)
        labels.append(torch.where(best >= 0.5, t['labels'][idx], 0))
        enc.append(model.roi_heads.box_coder.encode_single(t['boxes'][idx], p))
    labels, enc = torch.cat(labels), torch.cat(enc)
    predictor = model.roi_heads.box_predictor
    w, b = ridge(x, torch.nn.functional.one_hot(labels, 101).float())
    predictor.cls_score.weight.copy_(CLS_GAIN * w)
    predictor.cls_score.bias.copy_(CLS_GAIN * b)
    predictor.cls_score.bias[0] -= BG_SHIFT
    w, b = ridge(x[labels > 0], enc[labels > 0])
    predictor.bbox_pred.weight.copy_(w.repeat(101, 1))
    predictor.bbox_pred.bias.copy_(b.repeat(101))


@pytest.fixture(scope='module')
def val_root(module_tmp):
    out = module_tmp('seed-data')
    make_dataset(str(out), seed=0, num_unlabeled=0, num_train=0, num_val=NUM_VAL)
    return str(out / 'labeled')


@pytest.fixture(scope='module')
def fitted_seed_checkpoint(val_root, module_tmp):
    torch.manual_seed(0)
    model = seed_model()
    data = read_split(val_root)
    fit_to_images(model, [d[1] for d in data], [dict(boxes=d[2], labels=d[3]) for d in data])
    return save_e2e(model, str(module_tmp('seed') / 'best_e2e_checkpoint.pth.tar'))


@pytest.fixture(scope='module')
def random_seed_state():
    torch.manual_seed(1)
    return seed_model().state_dict()


def coco_ap(data, dets) -> float:
    """pycocotools' AP@[.5:.95] of per-image (boxes, scores, mmdet labels) on the yml boxes."""
    images, anns, results = [], [], []
    for (img_id, img, boxes, labels), (det_boxes, scores, det_labels) in zip(data, dets):
        images.append(dict(id=img_id, height=img.shape[1], width=img.shape[2]))
        for (x1, y1, x2, y2), c in zip(boxes.tolist(), labels.tolist()):
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=c, iscrowd=0,
                             bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1)))
        for (x1, y1, x2, y2), s, c in zip(det_boxes.tolist(), scores.tolist(), det_labels.tolist()):
            results.append(dict(image_id=img_id, category_id=c, score=s,
                                bbox=[x1, y1, x2 - x1, y2 - y1]))
    gt = COCO()
    gt.dataset = dict(images=images, annotations=anns,
                      categories=[dict(id=c) for c in range(len(LABELED_CLASSES))])
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(results), 'bbox')
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0])


def match(tv_dets, mm_dets):
    """Pairs each torchvision detection with an unused mmdet one of the same class, IoU >= 0.99
    and score within 1e-3 (the highest IoU first). Returns (matched, compared, largest score
    difference, smallest IoU) over all images; compared counts the larger side per image."""
    matched = compared = 0
    max_dscore, min_iou = 0.0, 1.0
    for (tb, ts, tl), (mb, ms, ml) in zip(tv_dets, mm_dets):
        compared += max(len(tb), len(mb))
        if not len(tb) or not len(mb):
            continue
        iou = box_iou(tb, mb)
        dscore = (ts[:, None] - ms[None]).abs()
        ok = (iou >= 0.99) & (tl[:, None] == ml[None]) & (dscore <= 1e-3)
        used = set()
        for i in range(len(tb)):
            free = [j for j in ok[i].nonzero().flatten().tolist() if j not in used]
            if free:
                j = max(free, key=lambda j: iou[i, j])
                used.add(j)
                matched += 1
                max_dscore = max(max_dscore, float(dscore[i, j]))
                min_iou = min(min_iou, float(iou[i, j]))
    return matched, compared, max_dscore, min_iou


@pytest.mark.slow
def test_converted_seed_detector_matches_torchvision(fitted_seed_checkpoint, val_root, tmp_path):
    """End to end at 800/1333: torchvision's FasterRCNN on the images vs tools/test.py with the
    converted checkpoint and the tv-e2e config, both 2 images per batch."""
    import test as test_tool
    converted = str(tmp_path / 'converted.pth')
    tv2mm.main([fitted_seed_checkpoint, converted])

    model = seed_model()
    state = torch.load(fitted_seed_checkpoint, weights_only=False)['state_dict']
    model.load_state_dict({k[len('module.'):]: v for k, v in state.items()})
    model.eval()
    data = read_split(val_root)
    tv_out = []
    with torch.no_grad():
        for k in range(0, len(data), 2):
            tv_out += model([d[1] for d in data[k:k + 2]])
    to_mmdet = {src: c for c, src in enumerate(tv2mm.torchvision_index_of_class('course'))}
    tv_dets = [(o['boxes'], o['scores'], torch.tensor([to_mmdet[int(v)] for v in o['labels']]))
               for o in tv_out]

    preds = str(tmp_path / 'preds.pkl')
    metrics = test_tool.main([
        TV_CONFIG, converted, '--data-root', val_root, '--out', preds,
        '--work-dir', str(tmp_path / 'w'), '--cfg-options', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
        f'test_dataloader.dataset.index_cache_dir={tmp_path / "index"}'])
    with open(preds, 'rb') as f:
        mm_out = sorted(pickle.load(f), key=lambda r: r['img_id'])
    assert [r['img_id'] for r in mm_out] == [d[0] for d in data]
    mm_dets = [(r['pred_instances']['bboxes'], r['pred_instances']['scores'],
                r['pred_instances']['labels']) for r in mm_out]

    matched, compared, max_dscore, min_iou = match(tv_dets, mm_dets)
    ap_tv, ap_mm = coco_ap(data, tv_dets), coco_ap(data, mm_dets)
    print(f'\nmatched {matched}/{compared} detections, max score diff {max_dscore:.2e}, '
          f'min IoU {min_iou:.6f}; AP torchvision {ap_tv:.4f}, mmdet {ap_mm:.4f}, '
          f'tools/test.py {metrics["coco/bbox_mAP"]}')
    assert compared >= 300  # enough detections for 99% to mean something (here 400)
    assert matched >= 0.99 * compared
    assert ap_tv > 0.3  # the fit found the objects: an AP difference would show
    assert abs(ap_tv - ap_mm) <= 0.002
    assert abs(metrics['coco/bbox_mAP'] - ap_tv) <= 0.002


def test_anchors_are_torchvisions():
    """Rounded base anchors, and P6's stride from the padded size: 800 px -> P5 25 -> P6 13,
    stride 800 // 13 = 61 (mmdet's AnchorGenerator: 64)."""
    cfg = Config.fromfile(TV_CONFIG).model.rpn_head.anchor_generator
    init_default_scope('mmdet')  # as the config's runner does, whatever a test before set
    ours = TASK_UTILS.build(cfg)
    sizes = [(200, 264), (100, 132), (50, 66), (25, 33), (13, 17)]
    theirs = seed_model().rpn.anchor_generator(
        ImageList(torch.zeros(1, 3, 800, 1056), [(800, 1037)]),
        [torch.zeros(1, 256, h, w) for h, w in sizes])[0]
    assert torch.equal(torch.cat(ours.grid_priors(sizes, device='cpu')), theirs)


def test_resize_is_torchvisions(val_root):
    """TorchvisionResize + mmdet's normalization give GeneralizedRCNNTransform's tensor."""
    cfg = Config.fromfile(TV_CONFIG)
    init_default_scope('mmdet')
    pipeline = [TRANSFORMS.build(t) for t in cfg.test_dataloader.dataset.pipeline]
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    transform = seed_model().transform
    for img_id, img, boxes, _ in read_split(val_root):
        results = dict(img_path=os.path.join(val_root, 'validation', 'images', f'{img_id}.JPEG'),
                       img_id=img_id, instances=[])
        for t in pipeline:
            results = t(results)
        batch = preprocessor(pseudo_collate([results]), False)
        expected = transform([img])[0]
        assert batch['data_samples'][0].img_shape == tuple(expected.image_sizes[0])
        assert batch['inputs'].shape == expected.tensors.shape
        assert (batch['inputs'] - expected.tensors).abs().max() < 1e-5


@pytest.mark.parametrize('norm_layer', [None, FrozenBatchNorm2d], ids=['bn', 'frozen-bn'])
def test_every_tensor_used_and_every_key_produced(norm_layer, tmp_path, capsys):
    torch.manual_seed(0)
    src = save_e2e(seed_model(norm_layer), str(tmp_path / 'e2e.pth.tar'))
    tv2mm.main([src, str(tmp_path / 'out.pth')])
    # FrozenBatchNorm2d has no num_batches_tracked: 53 fewer source tensors
    n_src = 348 if norm_layer is None else 295
    assert f'all {n_src} tensors used; all 348 keys of the mmdet model written' \
        in capsys.readouterr().out
    out = torch.load(str(tmp_path / 'out.pth'), weights_only=False)['state_dict']
    cfg = Config.fromfile(TV_CONFIG)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.load_state_dict(out, strict=True)


def test_old_torchvision_key_names_convert_the_same(random_seed_state):
    """torchvision < 0.13 (the seed's era) named the FPN and RPN convs without
    Conv2dNormActivation's '.0'."""
    old = {re.sub(r'^(rpn\.head\.conv|backbone\.fpn\.(inner|layer)_blocks\.\d)\.0\.(0\.)?',
                  lambda m: m.group(1) + '.', k): v for k, v in random_seed_state.items()}
    assert 'rpn.head.conv.weight' in old and 'backbone.fpn.inner_blocks.3.bias' in old
    new_out, old_out = tv2mm.convert(random_seed_state), tv2mm.convert(old)
    assert new_out.keys() == old_out.keys()
    assert all(torch.equal(new_out[k], old_out[k]) for k in new_out)


def test_class_order(random_seed_state):
    """mmdet: classes 0..99 then background; torchvision: background 0 then its outputs."""
    cls = random_seed_state['roi_heads.box_predictor.cls_score.weight']
    reg = random_seed_state['roi_heads.box_predictor.bbox_pred.weight'].view(101, 4, -1)
    for labels, tv_of_class in (('course', [100] + list(range(1, 100))),
                                ('plus-one', list(range(1, 101)))):
        out = tv2mm.convert(random_seed_state, labels)
        assert torch.equal(out['roi_head.bbox_head.fc_cls.weight'][:100], cls[tv_of_class])
        assert torch.equal(out['roi_head.bbox_head.fc_cls.weight'][100], cls[0])
        assert torch.equal(out['roi_head.bbox_head.fc_reg.weight'].view(100, 4, -1),
                           reg[tv_of_class])


def test_converter_refuses_other_files(random_seed_state, tmp_path):
    def save(name, state):
        path = str(tmp_path / name)
        torch.save(dict(epoch=100, arch='resnet50', state_dict=state), path)
        return path

    zero = torch.zeros(1)
    cases = [
        (save('checkpoint_0100.pth.tar', {'module.encoder_q.conv1.weight': zero,
                                          'module.queue': zero}),
         'facebookresearch/moco pretraining checkpoint'),
        (save('epoch_100.pth', {'backbone.conv1.weight': zero, 'neck.mlp.0.weight': zero,
                                'encoder_k.module.0.conv1.weight': zero, 'queue': zero}),
         'mmpretrain MoCo checkpoint'),
        (save('epoch_37.pth', {'backbone.conv1.weight': zero, 'rpn_head.rpn_conv.weight': zero}),
         'already an mmdet detector checkpoint'),
        (save('coco.pth', {**{f'module.{k}': v for k, v in random_seed_state.items()},
                           'module.roi_heads.box_predictor.cls_score.weight': torch.zeros(91, 1)}),
         'with 91 outputs'),
        (save('other.pth', {'fc.weight': zero}), 'not a torchvision Faster R-CNN checkpoint'),
    ]
    for path, words in cases:
        with pytest.raises(SystemExit, match=words):
            tv2mm.main([path, str(tmp_path / 'out.pth')])
    assert not os.path.exists(tmp_path / 'out.pth')
    # and tools/test.py points at the converter when given the seed's file unconverted
    with pytest.raises(ValueError, match='torchvision_frcnn_to_mmdet.py'):
        check_detector_checkpoint(save('e2e.pth.tar', {f'module.{k}': v for k, v in
                                                       random_seed_state.items()}))


@pytest.fixture(scope='module')
def moco_run(moco_checkpoint):
    """The shared MoCo checkpoint (BatchNorm statistics and affine parameters that differ per
    channel) and its backbone, loaded from it, in eval mode."""
    path, config = moco_checkpoint
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    backbone = MODELS.build(cfg.model.backbone)
    state = torch.load(path, map_location='cpu')['state_dict']
    backbone.load_state_dict({k[len('backbone.'):]: v for k, v in state.items()
                              if k.startswith('backbone.')})
    backbone.eval()  # mmpretrain's ResNet.train() returns None, not the module
    return path, backbone


def test_moco_export_loads_into_torchvision_resnet50(moco_run, tmp_path, capsys):
    path, backbone = moco_run
    out = str(tmp_path / 'resnet50_mocov2.pth')
    moco2tv.main([path, out])
    assert 'missing only fc.weight, fc.bias, nothing unexpected' in capsys.readouterr().out
    resnet = torchvision.models.resnet50()
    missing, unexpected = resnet.load_state_dict(torch.load(out), strict=False)
    assert sorted(missing) == ['fc.bias', 'fc.weight'] and unexpected == []
    ours = backbone.state_dict()
    theirs = resnet.state_dict()
    assert set(ours) == set(theirs) - {'fc.weight', 'fc.bias'}
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    resnet.eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expected = backbone(x)[-1]
        got = torch.nn.Sequential(*list(resnet.children())[:-2])(x)
    assert got.shape == expected.shape == (2, 2048, 3, 3)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_moco_export_refuses_other_files(tmp_path):
    zero = torch.zeros(1)
    for state, words in (({'module.encoder_q.conv1.weight': zero}, 'facebookresearch/moco'),
                         ({'backbone.conv1.weight': zero, 'roi_head.x': zero}, 'mmdet detector'),
                         ({'module.roi_heads.x': zero}, 'torchvision Faster R-CNN')):
        path = str(tmp_path / 'in.pth')
        torch.save(dict(state_dict=state), path)
        with pytest.raises(SystemExit, match=words):
            moco2tv.main([path, str(tmp_path / 'out.pth')])
