"""MoCo v2 two-view augmentation throughput per CPU core: our train pipeline vs the seed's.

    python tools/benchmarks/bench_moco_aug.py [--num 500] [--repeat 3] [--profile]

Writes NUM photo-like 224x224 PNGs (smooth colour fields plus pixel noise, about the size of a
real photo's PNG) and, in this one process with torch.set_num_threads(1) (a dataloader worker),
times per image, file to both views:
  seed - facebookresearch/moco --aug-plus: PIL open + convert('RGB'), TwoCropsTransform of
         RandomResizedCrop(224, (0.2, 1)), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8,
         RandomGrayscale p=0.2, moco's PIL GaussianBlur([.1, 2.]) p=0.5, RandomHorizontalFlip,
         ToTensor, Normalize: two float32 tensors, normalized
  ours - the train pipeline of configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py
         (mmpretrain Compose: LoadImageNamed, MultiView of the same augmentations, PackInputs):
         two uint8 tensors; normalization and BGR->RGB are left to SelfSupDataPreprocessor on
         the GPU
Best of REPEAT passes over the files each, taken in turn (page cache warm). Prints images/s per core for each, the
ratio, and the CPU cores per GPU each needs to feed 168 images/s/GPU (the seed's V100 rate).
--profile adds our time per transform.
"""
import argparse
import os
import os.path as osp
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict

import cv2
import numpy as np
import torch
from PIL import Image, ImageFilter

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
CONFIG = osp.join(ROOT, 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py')
GPU_RATE = 168  # images/s per GPU the real job consumes


def write_pngs(root: str, n: int) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        # low-frequency colour field (objects, sky, ...) plus sensor-like noise
        field = Image.fromarray(rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)).resize(
            (224, 224), Image.BICUBIC)
        img = np.asarray(field, np.float32) + rng.normal(0, 6, (224, 224, 3))
        path = osp.join(root, f'{i}.PNG')
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


class GaussianBlur:
    """facebookresearch/moco moco/loader.py: Gaussian blur augmentation in SimCLR."""

    def __init__(self, sigma=(.1, 2.)):
        self.sigma = sigma

    def __call__(self, x):
        sigma = random.uniform(self.sigma[0], self.sigma[1])
        return x.filter(ImageFilter.GaussianBlur(radius=sigma))


def seed_pipeline():
    """main_moco.py --aug-plus, TwoCropsTransform and ImageFolder's PIL loader."""
    from torchvision import transforms
    aug = transforms.Compose([
        transforms.RandomResizedCrop(224, scale=(0.2, 1.)),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomApply([GaussianBlur([.1, 2.])], p=0.5),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])

    def run(path):
        with open(path, 'rb') as f:
            img = Image.open(f).convert('RGB')
        return [aug(img), aug(img)]
    return run


def our_pipeline(profile=None):
    from mmengine.config import Config
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(CONFIG)
    init_default_scope(cfg.default_scope)
    pipeline = Compose(cfg.train_dataloader.dataset.pipeline)
    if profile is not None:
        timed(pipeline, profile)

    def run(path):
        return pipeline(dict(img_path=path))['inputs']
    return run


def timed(compose, acc, prefix=''):
    """Wrap every transform (views' ones included) to add its time to acc[name]."""
    for i, t in enumerate(compose.transforms):
        name = prefix + type(t).__name__
        for inner in getattr(t, 'pipelines', []):  # MultiView: time each view's transforms
            timed(inner, acc, prefix='  ')
        for inner in getattr(t, 'transforms', []) if name.strip() == 'RandomApply' else []:
            name += f'({type(inner).__name__})'

        def wrapped(results, t=t, name=name):
            start = time.perf_counter()
            out = t(results)
            acc[name] += time.perf_counter() - start
            return out
        compose.transforms[i] = wrapped


def best_rates(runs, paths, repeat):
    """Fastest pass of each run; passes taken in turn so that load from elsewhere hits all."""
    best = [0.] * len(runs)
    for _ in range(repeat):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            for p in paths:
                run(p)
            best[i] = max(best[i], len(paths) / (time.perf_counter() - start))
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--num', type=int, default=500, help='PNG files')
    p.add_argument('--repeat', type=int, default=3, help='passes; the fastest counts')
    p.add_argument('--profile', action='store_true', help='also time each of our transforms')
    args = p.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(0)  # as mmengine sets it in dataloader workers: no cv2 thread pool
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    root = tempfile.mkdtemp(prefix='bench_moco_aug_')
    try:
        paths = write_pngs(root, args.num)
        size = np.mean([os.path.getsize(p) for p in paths]) / 1024
        seed_run, our_run = seed_pipeline(), our_pipeline()
        a, b = seed_run(paths[0]), our_run(paths[0])
        print(f'{args.num} PNGs 224x224, {size:.0f} KiB each; one process, 1 torch thread')
        print(f'seed output: 2 x {tuple(a[0].shape)} {a[0].dtype} (normalized); '
              f'ours: 2 x {tuple(b[0].shape)} {b[0].dtype} (normalized on the GPU)')
        seed, ours = best_rates([seed_run, our_run], paths, args.repeat)
        print(f'seed (torchvision, PIL): {seed:6.1f} img/s/core -> '
              f'{GPU_RATE / seed:4.1f} cores per GPU at {GPU_RATE} img/s/GPU')
        print(f'ours (mmpretrain)      : {ours:6.1f} img/s/core -> '
              f'{GPU_RATE / ours:4.1f} cores per GPU ({ours / seed:.2f}x the seed)')
        if args.profile:
            acc = defaultdict(float)
            best_rates([our_pipeline(acc)], paths, 1)
            total = sum(v for k, v in acc.items() if not k.startswith(' '))
            print(f'ours per transform, ms per image ({args.num} images, one pass):')
            for name, t in acc.items():
                print(f'  {name:42s} {1000 * t / args.num:6.2f}  ({100 * t / total:4.1f} %)')
    finally:
        shutil.rmtree(root)


if __name__ == '__main__':
    main()
