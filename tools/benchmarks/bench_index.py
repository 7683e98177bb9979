"""Annotation index load time: LabeledDetDataset's index vs a plain PyYAML loop.

    python tools/benchmarks/bench_index.py [--num 50000] [--workdir /tmp/bench_index]

Writes NUM yml files in the course layout (training-like records: 1-6 boxes, image_size) and
beside each a real JPEG of the size its yml claims (the index reads every image header). The
images are plain grey, one encoding per distinct size with the bytes reused (sizes are drawn
on an 8-pixel grid, so there are at most 55 x 55 encodings), then times:
  plain  - the starter code's way: yaml.load(f, Loader=yaml.FullLoader) per file, one process
  cold   - load_split without a cache (libyaml, worker processes)
  cached - load_split again (index cache hit)
The page cache is warm for all three (the files were just written or read).
"""
import argparse
import io
import os
import os.path as osp
import shutil
import sys
import tempfile
import time

import numpy as np
import yaml

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from custom_modules.datasets.classes import LABELED_CLASSES  # noqa: E402
from custom_modules.datasets.labeled_index import load_split  # noqa: E402


def _jpeg_bytes(size: tuple, cache: dict) -> bytes:
    """A valid plain-grey JPEG of this (width, height), encoded once per size."""
    if size not in cache:
        from PIL import Image
        buf = io.BytesIO()
        Image.new('RGB', size, (128, 128, 128)).save(buf, format='JPEG', quality=50)
        cache[size] = buf.getvalue()
    return cache[size]


def write_split(root: str, n: int) -> None:
    rng = np.random.default_rng(0)
    img_dir, label_dir = osp.join(root, 'training', 'images'), osp.join(root, 'training', 'labels')
    os.makedirs(img_dir)
    os.makedirs(label_dir)
    jpegs: dict = {}
    for i in range(1, n + 1):
        w, h = 8 * int(rng.integers(25, 80)), 8 * int(rng.integers(25, 80))  # 200..632
        k = int(rng.integers(1, 7))
        boxes = [[int(x), int(y), int(x + bw), int(y + bh)] for x, y, bw, bh in zip(
            rng.integers(0, w // 2, k), rng.integers(0, h // 2, k),
            rng.integers(10, w // 2, k), rng.integers(10, h // 2, k))]
        labels = [LABELED_CLASSES[j] for j in rng.integers(0, 100, k)]
        with open(osp.join(label_dir, f'{i}.yml'), 'w') as f:
            yaml.safe_dump(dict(bboxes=boxes, image_size=[w, h], labels=labels), f)
        with open(osp.join(img_dir, f'{i}.JPEG'), 'wb') as f:
            f.write(_jpeg_bytes((w, h), jpegs))


def plain_loop(root: str) -> int:
    label_dir = osp.join(root, 'training', 'labels')
    n = 0
    for name in os.listdir(label_dir):
        with open(osp.join(label_dir, name)) as f:
            doc = yaml.load(f, Loader=yaml.FullLoader)
        n += len(doc['bboxes'])
    return n


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--num', type=int, default=50000)
    p.add_argument('--workdir', help='default: a temporary folder, removed afterwards')
    args = p.parse_args()
    root = args.workdir or tempfile.mkdtemp(prefix='bench_index_')
    cache = osp.join(root, 'cache')
    try:
        t = time.perf_counter()
        if not osp.isdir(osp.join(root, 'training')):
            write_split(root, args.num)
        print(f'files ready: {args.num} yml + JPEG in {time.perf_counter() - t:.1f} s ({root})')
        t = time.perf_counter()
        n_plain = plain_loop(root)
        plain = time.perf_counter() - t
        t = time.perf_counter()
        recs, rep = load_split(root, 'training', cache_dir=cache, use_cache=False)
        recs, rep = load_split(root, 'training', cache_dir=cache)  # cold: writes the cache
        cold = (time.perf_counter() - t) / 2
        t = time.perf_counter()
        recs2, rep2 = load_split(root, 'training', cache_dir=cache)
        cached = time.perf_counter() - t
        assert rep2.from_cache and rep.num_boxes == n_plain == rep2.num_boxes
        assert not rep.problems, dict(rep.problems)  # every yml size matches its image header
        print(f'cpus: {os.cpu_count()}  libyaml: {yaml.__with_libyaml__}')
        print(f'plain PyYAML loop : {plain:6.2f} s')
        print(f'index, no cache   : {cold:6.2f} s   ({plain / cold:.1f}x)')
        print(f'index, cached     : {cached:6.2f} s   ({plain / cached:.1f}x)')
    finally:
        if not args.workdir:
            shutil.rmtree(root)


if __name__ == '__main__':
    main()
