"""Training throughput on CPU: our mmdet/mmpretrain models vs the seed's plain-PyTorch ones.

    python tools/benchmarks/bench_train_step.py [--part det moco] [--threads N] [--warmup 2]
        [--iters 5] [--det-batch 2] [--size 800x1067] [--batch 8] [--lr 0.001]
        [--no-channels-last] [--det-cfg-options KEY=VALUE ...]

One training step = forward, losses, backward, SGD step (momentum 0.9, weight decay 1e-4), on
the same generated inputs for both sides, in one process; images/s over ITERS steps after
WARMUP, the models' steps taken in turn:
  det  - Faster R-CNN R50-FPN, DET_BATCH images of SIZE (HxW, padded to /32 by both; default:
         a 4:3 image at the configs' 1333x800 scale), 1-6 boxes each, 100 classes.
         ours:   the model of configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py
                 (backbone init_cfg unset) via model.train_step with its OptimWrapper; the uint8
                 batch goes through its DetDataPreprocessor (normalize, pad)
         theirs: torchvision FasterRCNN(resnet_fpn_backbone('resnet50', trainable_layers=5),
                 FrozenBatchNorm2d, num_classes=101) with min_size/max_size = SIZE, so its
                 transform normalizes and pads without resizing
  moco - MoCo v2 R50 on BATCH pairs of 224x224 views (images/s counts pairs).
         ours:   the model of configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py via
                 model.train_step (uint8 views, normalized by its SelfSupDataPreprocessor)
         theirs: facebookresearch/moco builder.MoCo (--mlp, K 65536, m 0.999, T 0.2) on views
                 normalized beforehand, as its dataloader delivered them; shuffle BN as a
                 local permutation (one process)
LR is small so that randomly initialized models stay finite; it does not change the work done.
With channels-last (the default) ours is timed a second time with the model in
torch.channels_last memory format.
"""
import argparse
import os.path as osp
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import DictAction

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
DET_CONFIG = osp.join(ROOT, 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py')
MOCO_CONFIG = osp.join(ROOT, 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py')


def build_mm(config, lr, cfg_edit=None):
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(config)
    if cfg_edit:
        cfg_edit(cfg)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    cfg.optim_wrapper.optimizer.lr = lr
    return model, build_optim_wrapper(model, cfg.optim_wrapper)


def det_inputs(n, h, w):
    """uint8 BGR images (C, H, W) and per image xyxy boxes and labels 0-99."""
    rng = np.random.default_rng(0)
    imgs, boxes, labels = [], [], []
    for _ in range(n):
        imgs.append(torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)))
        k = int(rng.integers(1, 7))
        xy = rng.uniform(0, [w * 0.7, h * 0.7], (k, 2))
        wh = rng.uniform(16, [w * 0.3, h * 0.3], (k, 2))
        boxes.append(torch.tensor(np.hstack([xy, xy + wh]), dtype=torch.float32))
        labels.append(torch.from_numpy(rng.integers(0, 100, k)))
    return imgs, boxes, labels


def ours_det(imgs, boxes, labels, lr, channels_last, cfg_options=None):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    def edit(cfg):
        cfg.model.backbone.init_cfg = None  # no MoCo checkpoint: random weights are as slow
        cfg.merge_from_dict(cfg_options or {})
    model, optim = build_mm(DET_CONFIG, lr, edit)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    samples = []
    for img, b, lab in zip(imgs, boxes, labels):
        h, w = img.shape[1:]
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.),
                                        flip=False))
        s.gt_instances = InstanceData(bboxes=b, labels=lab)
        samples.append(s)
    data = dict(inputs=imgs, data_samples=samples)
    return lambda: model.train_step(data, optim)['loss'].item()


def theirs_det(imgs, boxes, labels, lr):
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    torch.manual_seed(0)
    h, w = imgs[0].shape[1:]
    backbone = resnet_fpn_backbone(backbone_name='resnet50', weights=None, trainable_layers=5)
    model = FasterRCNN(backbone, num_classes=101, min_size=min(h, w), max_size=max(h, w))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    targets = [dict(boxes=b, labels=lab + 1) for b, lab in zip(boxes, labels)]  # 0: background

    def step():
        images = [img.flip(0).float() / 255 for img in imgs]  # ToTensor's RGB [0, 1]
        loss = sum(model(images, targets).values())
        optim.zero_grad()
        loss.backward()
        optim.step()
        return loss.item()
    return step


class SeedMoCo(nn.Module):
    """facebookresearch/moco moco/builder.py MoCo with --mlp, on one process."""

    def __init__(self, dim=128, K=65536, m=0.999, T=0.2):
        super().__init__()
        import torchvision
        self.K, self.m, self.T = K, m, T
        self.encoder_q = torchvision.models.resnet50(num_classes=dim)
        self.encoder_k = torchvision.models.resnet50(num_classes=dim)
        dim_mlp = self.encoder_q.fc.weight.shape[1]
        for enc in (self.encoder_q, self.encoder_k):
            enc.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), enc.fc)
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data.copy_(param_q.data)
            param_k.requires_grad = False
        self.register_buffer('queue', F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer('queue_ptr', torch.zeros(1, dtype=torch.long))

    def forward(self, im_q, im_k):
        q = F.normalize(self.encoder_q(im_q), dim=1)
        with torch.no_grad():
            for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
                param_k.data = param_k.data * self.m + param_q.data * (1. - self.m)
            idx_shuffle = torch.randperm(im_k.shape[0])
            k = F.normalize(self.encoder_k(im_k[idx_shuffle]), dim=1)[torch.argsort(idx_shuffle)]
        l_pos = torch.einsum('nc,nc->n', [q, k]).unsqueeze(-1)
        l_neg = torch.einsum('nc,ck->nk', [q, self.queue.clone().detach()])
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long)
        ptr = int(self.queue_ptr)
        self.queue[:, ptr:ptr + k.shape[0]] = k.T
        self.queue_ptr[0] = (ptr + k.shape[0]) % self.K
        return F.cross_entropy(logits, labels)


def moco_views(n):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=g) for _ in range(2)]


def ours_moco(views, lr, channels_last):
    from mmpretrain.structures import DataSample
    model, optim = build_mm(MOCO_CONFIG, lr)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = dict(inputs=views, data_samples=[DataSample() for _ in range(len(views[0]))])
    return lambda: model.train_step(data, optim)['loss'].item()


def theirs_moco(views, lr):
    torch.manual_seed(0)
    model = SeedMoCo().train()
    optim = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    im_q, im_k = ((v.flip(1).float() / 255 - mean) / std for v in views)  # BGR -> RGB

    def step():
        loss = model(im_q, im_k)
        optim.zero_grad()
        loss.backward()
        optim.step()
        return loss.item()
    return step


def compare(title, n, runs, args):
    """Steps of the models taken in turn, so that load from elsewhere slows them alike."""
    print(title)
    steps = {name: make() for name, make in runs}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    spent, loss = dict.fromkeys(steps, 0.), {}
    for _ in range(args.iters):
        for name, step in steps.items():
            start = time.perf_counter()
            loss[name] = step()
            spent[name] += time.perf_counter() - start
    rates = {name: n * args.iters / t for name, t in spent.items()}
    for name, r in rates.items():
        ratio = '' if name == 'theirs' else f'{r / rates["theirs"]:.2f}x theirs'
        print(f'  {name:20s}: {r:7.2f} img/s {ratio:15s} (last loss {loss[name]:.3f})')


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--part', nargs='+', choices=['det', 'moco'], default=['det', 'moco'])
    p.add_argument('--threads', type=int, help="torch threads (default: torch's, all cores)")
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    p.add_argument('--iters', type=int, default=5, help='timed steps')
    p.add_argument('--det-batch', type=int, default=2, help='detector images per step')
    p.add_argument('--size', default='800x1067', help='detector input HxW')
    p.add_argument('--batch', type=int, default=8, help='MoCo pairs per step')
    p.add_argument('--lr', type=float, default=0.001)
    p.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=True,
                   help='also time ours in channels_last memory format')
    p.add_argument('--det-cfg-options', nargs='+', action=DictAction, default={},
                   help="override our detector's config, e.g. "
                        'model.roi_head.bbox_roi_extractor.roi_layer.sampling_ratio=2')
    args = p.parse_args()
    import logging
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)  # no init_weights report
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; '
          f'{args.warmup} warm-up + {args.iters} timed steps')
    layouts = [False, True] if args.channels_last else [False]
    if 'det' in args.part:
        h, w = (int(v) for v in args.size.split('x'))
        data = det_inputs(args.det_batch, h, w)
        compare(f'Faster R-CNN R50-FPN, {args.det_batch} x {h}x{w}', args.det_batch,
                [('theirs', lambda: theirs_det(*data, args.lr))]
                + [('ours' + ' channels_last' * cl, lambda cl=cl: ours_det(*data, args.lr, cl,
                                                                    args.det_cfg_options))
                   for cl in layouts], args)
    if 'moco' in args.part:
        views = moco_views(args.batch)
        compare(f'MoCo v2 R50, {args.batch} pairs of 224x224', args.batch,
                [('theirs', lambda: theirs_moco(views, args.lr))]
                + [('ours' + ' channels_last' * cl, lambda cl=cl: ours_moco(views, args.lr, cl))
                   for cl in layouts], args)


if __name__ == '__main__':
    main()
