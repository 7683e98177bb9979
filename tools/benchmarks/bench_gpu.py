"""GPU training throughput and memory of our two models, for sizing Slurm jobs.

    python tools/benchmarks/bench_gpu.py [--out results.json] [--budget-s 330]

Builds the models from the repository's configs (MoCo v2 R50 and Faster R-CNN R50-FPN, random
init) and runs full training steps (`model.train_step`: data preprocessor, forward, backward,
SGD step, and for MoCo the key-encoder update and queue) on synthetic uint8 batches held in
pinned CPU memory, so the host-to-device copy is timed but image decoding and augmentation
are not (tools/benchmarks/bench_moco_aug.py measures those on the CPU). Detection images are
1333x800 (the largest the resize produces) with 5 boxes each.

Prints, per model: img/s and peak memory for fp32 vs AMP (what `tools/train.py --amp` selects:
fp16 with dynamic loss scaling), bf16, channels_last; the largest batch per GPU that fits in a
15 GiB cap (a 16 GB V100: what the seed had) and uncapped; and the wall clock of the seed's
schedule at these speeds. Single GPU: multi-GPU figures assume linear DDP scaling.
"""
import argparse
import gc
import json
import math
import os
import sys
import time

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)  # so the configs' custom_imports find custom_modules
MOCO_CFG = 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py'
DET_CFG = 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py'
# the seed's schedule (seed-recipe.md): MoCo 100 epochs of 512,000 PNGs on 4 V100 in ~21 h;
# detection 37 epochs of 30,000 images on 2 V100 in ~16 h
SEED = dict(moco=dict(images=100 * 512_000, gpus=4, hours=21.0, batch=32),
            det=dict(images=37 * 30_000, gpus=2, hours=16.0, batch=2))
V100_ANCHOR = dict(moco=168.0, det=9.5)  # img/s per V100 (facebookresearch/moco, detectron2)
CAP_GIB = 15.0  # usable memory of a 16 GB V100 once the CUDA context is loaded


def build(name, device, channels_last):
    cfg = Config.fromfile(os.path.join(REPO, MOCO_CFG if name == 'moco' else DET_CFG))
    init_default_scope('mmpretrain' if name == 'moco' else 'mmdet')
    if name == 'det':
        cfg.model.backbone.init_cfg = None  # random init: speed does not depend on weights
    model = MODELS.build(cfg.model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    return cfg, model


def make_batch(name, batch, gen):
    if name == 'moco':
        from mmpretrain.structures import DataSample
        views = [torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, generator=gen)
                 for _ in range(2)]
        return dict(inputs=[v.pin_memory() if torch.cuda.is_available() else v for v in views],
                    data_samples=[DataSample() for _ in range(batch)])
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    h, w = 800, 1333
    inputs, samples = [], []
    for _ in range(batch):
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
        inputs.append(img.pin_memory() if torch.cuda.is_available() else img)
        xy = torch.rand(5, 2, generator=gen) * torch.tensor([w - 400, h - 400])
        wh = 32 + torch.rand(5, 2, generator=gen) * 360
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                      labels=torch.randint(0, 100, (5, ), generator=gen))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def optim(cfg, model, precision):
    ow = cfg.optim_wrapper.copy()
    if precision != 'fp32':
        ow.type = 'AmpOptimWrapper'
        ow.loss_scale = 'dynamic'
        ow.dtype = 'float16' if precision == 'amp' else 'bfloat16'
    return build_optim_wrapper(model, ow)


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


_built = {}  # one model at a time, reused across precisions and batch sizes


def measure(name, device, precision='fp32', batch=None, channels_last=False,
            cudnn_benchmark=False, warmup=3, iters=10, cap_gib=None):
    """img/s and peak GiB of `iters` train steps after `warmup`; None when out of memory."""
    key = (name, channels_last)
    if key not in _built:
        _built.clear()
        gc.collect()
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        _built[key] = build(name, device, channels_last)
    cfg, model = _built[key]
    batch = batch or SEED[name]['batch']
    torch.backends.cudnn.benchmark = cudnn_benchmark
    wrapper = optim(cfg, model, precision)
    data = make_batch(name, batch, torch.Generator().manual_seed(0))
    if device.type == 'cuda':
        torch.cuda.set_per_process_memory_fraction(
            1.0 if cap_gib is None else
            cap_gib * 2**30 / torch.cuda.get_device_properties(device).total_memory)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        for _ in range(warmup):
            model.train_step(data, wrapper)
        sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            model.train_step(data, wrapper)
        sync(device)
        dt = time.perf_counter() - t
    except torch.OutOfMemoryError:
        wrapper.zero_grad()
        return None
    finally:
        del wrapper
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == 'cuda' else float('nan')
    return dict(img_s=batch * iters / dt, s_iter=dt / iters, peak_gib=peak, batch=batch)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', help='write every figure as JSON here (also after each one)')
    p.add_argument('--budget-s', type=float, default=330,
                   help='skip the remaining measurements after this many seconds')
    p.add_argument('--models', default='moco,det')
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--quick', action='store_true',
                   help='fp32 and AMP at the default batch only (no variants, no batch sweep)')
    p.add_argument('--max-moco-batch', type=int, default=1024)
    p.add_argument('--max-det-batch', type=int, default=64)
    args = p.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    name_dev = torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'
    start = time.perf_counter()
    results = dict(device=name_dev, torch=torch.__version__, runs=[])

    def record(name, label, r, **kw):
        row = dict(model=name, label=label, **kw)
        row.update(r or dict(oom=True))
        results['runs'].append(row)
        if r:
            print(f'{name:5s} {label:34s} batch {r["batch"]:4d}  {r["img_s"]:8.1f} img/s  '
                  f'{r["s_iter"]:.3f} s/iter  peak {r["peak_gib"]:6.2f} GiB', flush=True)
        else:
            print(f'{name:5s} {label:34s} batch {kw.get("batch")}: out of memory', flush=True)
        if args.out:
            with open(args.out, 'w') as f:
                json.dump(results, f, indent=1)
        return r

    def left():
        return args.budget_s - (time.perf_counter() - start)

    print(f'device: {name_dev}, torch {torch.__version__}', flush=True)
    models = args.models.split(',')
    best = {}
    for name in models:
        base = record(name, 'fp32', measure(name, device, 'fp32', warmup=5, iters=args.iters))
        amp = record(name, 'amp fp16 (--amp)', measure(name, device, 'amp', iters=args.iters))
        best[name] = ('amp', False, False, amp)
        for label, kw in () if args.quick else (('amp bf16', dict(precision='bf16')),
                          ('amp fp16 + cudnn.benchmark', dict(precision='amp',
                                                               cudnn_benchmark=True)),
                          ('amp fp16 + channels_last', dict(precision='amp',
                                                             channels_last=True))):
            if left() < 60:
                break
            if name == 'det' and kw['precision'] == 'bf16':
                continue  # mmcv's RoIAlign has no bf16 CUDA kernel (NotImplementedError)
            r = record(name, label, measure(name, device, iters=args.iters, **kw))
            if r and kw['precision'] == 'amp' and r['img_s'] > best[name][3]['img_s']:
                best[name] = ('amp', kw.get('channels_last', False),
                              kw.get('cudnn_benchmark', False), r)
        if base and amp:
            print(f'{name}: AMP / fp32 = {amp["img_s"] / base["img_s"]:.2f}x', flush=True)
    fits = {}
    for name in [] if args.quick else models:
        _, cl, cb, _ = best[name]
        top = args.max_moco_batch if name == 'moco' else args.max_det_batch
        for cap, precisions in ((CAP_GIB, ('amp', 'fp32')), (None, ('amp', ))):
            for prec in precisions:
                batch, last = SEED[name]['batch'], None
                while batch <= top and left() > 30:
                    r = record(name, f'{prec} sweep, cap {cap or "none"} GiB',
                               measure(name, device, prec, batch, cl, cb, warmup=2, iters=3,
                                       cap_gib=cap), batch=batch, cap_gib=cap)
                    if r is None:
                        break
                    last, batch = r, batch * 2
                fits[(name, prec, cap)] = last
    print('\n== summary', flush=True)
    for name in models:
        anchor, seed = V100_ANCHOR[name], SEED[name]
        r = best[name][3]
        if r is None:
            continue
        print(f'{name}: best at batch {r["batch"]}: {r["img_s"]:.1f} img/s = '
              f'{r["img_s"] / anchor:.1f}x the V100 anchor ({anchor} img/s)')
        for (n, prec, cap), f in fits.items():
            if n == name and f:
                print(f'  largest batch tried that fits ({prec}, cap {cap or "none"} GiB): '
                      f'{f["batch"]} ({f["img_s"]:.1f} img/s, peak {f["peak_gib"]:.1f} GiB)')
        fastest = max([f for (n, _, c), f in fits.items() if n == name and f and c is None]
                      + [r], key=lambda f: f['img_s'])
        # the seed's batch keeps its recipe; a larger one needs the LR scaled (auto_scale_lr)
        for f in [r] + ([fastest] if fastest is not r else []):
            for gpus in sorted({1, seed['gpus']}):
                hours = seed['images'] / (f['img_s'] * gpus) / 3600
                print(f'  seed schedule ({seed["images"] / 1e6:.2f} M images), {gpus} GPU x '
                      f'{f["batch"]}: {hours:.1f} h at {f["img_s"]:.0f} img/s/GPU (seed: '
                      f'{seed["hours"]} h on {seed["gpus"]} V100) -> {math.ceil(hours / 23)} '
                      f'job(s) of 24 h')
        results.setdefault('summary', {})[name] = dict(best=r, fastest=fastest)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
