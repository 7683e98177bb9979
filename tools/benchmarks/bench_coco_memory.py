"""Memory of a forked DataLoader worker over a large COCO annotation file.

    python tools/benchmarks/bench_coco_memory.py [--mb 220] [--workers 2] [--workdir DIR]

Writes an ``instances_training.json`` of at least MB megabytes (2,000 images, one tiny JPEG
each; annotations with a 24-point polygon and tool attributes, as annotation tools export
them), builds ``CocoFormatDataset`` on it in this process (as train.py does before its loader
forks), then starts a torch DataLoader with WORKERS forked workers. Each worker reads a few
items, runs a full garbage collection (what any long-running worker does sooner or later: it
writes to every tracked Python object, so pages shared with the parent are copied), and reports
its USS (memory unique to it: psutil when installed, else /proc/PID/smaps_rollup). Printed:
the JSON size, the parent's RSS after indexing, and each worker's USS.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import os.path as osp
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def uss_mib(pid: int | None = None) -> float:
    """Unique set size of a process in MiB (private clean + private dirty pages)."""
    pid = pid or os.getpid()
    try:
        import psutil
        return psutil.Process(pid).memory_full_info().uss / 2**20
    except ImportError:
        kb = 0
        with open(f'/proc/{pid}/smaps_rollup') as f:
            for line in f:
                if line.startswith(('Private_Clean:', 'Private_Dirty:')):
                    kb += int(line.split()[1])
        return kb / 1024


def rss_mib() -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def write_coco(root: str, mb: int, n_images: int = 2000) -> str:
    """A COCO set of at least ``mb`` MB of JSON; the images share one tiny JPEG's bytes."""
    from PIL import Image
    img_dir = osp.join(root, 'training')
    os.makedirs(img_dir)
    os.makedirs(osp.join(root, 'annotations'))
    first = osp.join(img_dir, '0.jpg')
    Image.new('RGB', (320, 240), (90, 120, 150)).save(first, quality=50)
    for i in range(1, n_images):
        os.link(first, osp.join(img_dir, f'{i}.jpg'))
    rng = np.random.default_rng(0)
    path = osp.join(root, 'annotations', 'instances_training.json')
    cats = [dict(id=i + 1, name=f'class{i}') for i in range(20)]
    images = [dict(id=i, file_name=f'{i}.jpg', width=320, height=240) for i in range(n_images)]
    with open(path, 'w') as f:
        f.write('{"categories": %s, "images": %s, "annotations": [' % (
            json.dumps(cats), json.dumps(images)))
        k, size = 0, f.tell()
        while size < mb * 10**6:
            x, y = rng.integers(0, 250).item(), rng.integers(0, 170).item()
            w, h = rng.integers(8, 70, 2).tolist()
            poly = np.round(rng.uniform(0, 1, 48) * np.tile([w, h], 24) + np.tile([x, y], 24),
                            2).tolist()
            a = dict(id=k + 1, image_id=k % n_images, category_id=k % 20 + 1,
                     bbox=[x, y, w, h], area=w * h * 0.6, iscrowd=0, segmentation=[poly],
                     attributes=dict(occluded=bool(k % 3), track_id=k, source='tool'))
            text = (',' if k else '') + json.dumps(a)
            f.write(text)
            size += len(text)
            k += 1
        f.write(']}')
    return path


class Probe:
    """Item i: (worker pid, its USS after a full collection) once i items have been read."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return 16

    def __getitem__(self, i):
        self.ds.get_data_info(i % len(self.ds))
        gc.collect()
        return os.getpid(), uss_mib()


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--mb', type=int, default=220)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--workdir', help='default: a temporary folder, removed afterwards')
    args = p.parse_args()
    import torch
    from mmengine.registry import init_default_scope

    from custom_modules.datasets.coco_det import CocoFormatDataset
    init_default_scope('mmdet')
    root = args.workdir or tempfile.mkdtemp(prefix='bench_coco_memory_')
    try:
        t = time.perf_counter()
        ann = osp.join(root, 'annotations', 'instances_training.json')
        if not osp.isfile(ann):
            write_coco(root, args.mb)
        print(f'JSON: {osp.getsize(ann) / 1e6:.0f} MB ({time.perf_counter() - t:.0f} s to '
              f'write; {root})')
        t = time.perf_counter()
        ds = CocoFormatDataset(data_root=root, split='training', pipeline=[],
                               filter_cfg=dict(filter_empty_gt=False))
        ds.full_init()
        gc.collect()
        print(f'indexed {len(ds)} images in {time.perf_counter() - t:.0f} s; parent RSS '
              f'{rss_mib():.0f} MiB, USS {uss_mib():.0f} MiB')
        loader = torch.utils.data.DataLoader(Probe(ds), batch_size=None,
                                             num_workers=args.workers,
                                             multiprocessing_context='fork')
        last = {}
        for pid, uss in loader:
            last[int(pid)] = float(uss)
        for pid, uss in sorted(last.items()):
            print(f'worker {pid}: USS {uss:.0f} MiB after a full collection')
        print(f'mean worker USS: {sum(last.values()) / len(last):.0f} MiB')
    finally:
        if not args.workdir:
            shutil.rmtree(root)


if __name__ == '__main__':
    main()
