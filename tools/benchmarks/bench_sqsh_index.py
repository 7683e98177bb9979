"""The labeled index over a squashfs image: time, and bytes read to get the image sizes.

    python tools/benchmarks/bench_sqsh_index.py [--num 30000] [--sides 200 632] [--workdir DIR]

Writes NUM images in the course layout (``training/images/<id>.JPEG`` with its yml): JPEGs
with sides drawn between SIDES pixels and a textured background (200-632: about 10-130 KB,
mostly under mksquashfs' 128 KiB block, so stored in fragment blocks shared by several files;
480-800: about 60-250 KB, mostly over it; one encoding per size, each file made unique by a
comment segment, as mksquashfs stores identical files once), packs them with mksquashfs (gzip,
the default), then
in fresh processes:
  serial - load_split over the image without cache, one process, counting the bytes the
           squashfs reader reads for the JPEGs (compressed blocks and fragment blocks as
           stored) against the JPEGs' total size
  pool   - the same with the default worker processes (what training does), time only
The page cache is warm (the image was just written and read). CPU seconds (this process and
its workers) are printed beside the wall time: on a machine shared with other jobs they vary
far less.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import os.path as osp
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

_CHILD = r'''
import json, resource, sys, time
sys.path.insert(0, {root!r})
from custom_modules.datasets.labeled_index import load_split
from custom_modules.fileio import squashfs
read = [0, 0]
pread = squashfs.SquashfsImage._pread
def counted(self, size, offset, inner):
    if inner.endswith('.JPEG'):
        read[0] += size
        read[1] += 1
    return pread(self, size, offset, inner)
squashfs.SquashfsImage._pread = counted
squashfs.open_image({image!r})  # the image's own index is built or mapped before the clock
def cpu():
    return time.process_time() + sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
t, c = time.perf_counter(), cpu()
records, report = load_split('sqsh://' + {image!r}, 'training', use_cache=False,
                             num_workers={workers})
print(json.dumps(dict(seconds=time.perf_counter() - t, cpu=cpu() - c, bytes=read[0],
                      reads=read[1], images=len(records))))
'''


def _jpeg(size: tuple, cache: dict, tag: int) -> bytes:
    if size not in cache:
        from PIL import Image
        rng = np.random.default_rng(size[0] * 1000 + size[1])
        w, h = size
        small = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format='JPEG', quality=90)
        cache[size] = buf.getvalue()
    data = cache[size]
    text = b'%d' % tag
    return data[:2] + b'\xff\xfe' + struct.pack('>H', len(text) + 2) + text + data[2:]


def write_split(root: str, n: int, sides: tuple) -> int:
    rng = np.random.default_rng(0)
    img_dir, label_dir = osp.join(root, 'training', 'images'), osp.join(root, 'training', 'labels')
    os.makedirs(img_dir)
    os.makedirs(label_dir)
    cache, total = {}, 0
    for i in range(1, n + 1):
        lo, hi = sides[0] // 8, sides[1] // 8 + 1
        w, h = 8 * int(rng.integers(lo, hi)), 8 * int(rng.integers(lo, hi))
        with open(osp.join(label_dir, f'{i}.yml'), 'w') as f:
            yaml.safe_dump(dict(bboxes=[[1, 1, w // 2, h // 2]], image_size=[w, h],
                                labels=['dog']), f)
        data = _jpeg((w, h), cache, i)
        total += len(data)
        with open(osp.join(img_dir, f'{i}.JPEG'), 'wb') as f:
            f.write(data)
    return total


def run(image: str, workers: int, cache: str) -> dict:
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    out = subprocess.run([sys.executable, '-c', _CHILD.format(root=ROOT, image=image,
                                                              workers=workers)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--num', type=int, default=30000)
    p.add_argument('--sides', type=int, nargs=2, default=(200, 632))
    p.add_argument('--workdir', help='default: a temporary folder, removed afterwards')
    args = p.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix='bench_sqsh_index_')
    src, image = osp.join(work, 'labeled'), osp.join(work, 'labeled.sqsh')
    try:
        t = time.perf_counter()
        if not osp.isfile(image):
            total = write_split(src, args.num, args.sides)
            subprocess.run(['mksquashfs', src, image, '-noappend', '-quiet', '-no-progress'],
                           check=True, capture_output=True)
            with open(osp.join(work, 'jpeg_bytes'), 'w') as f:
                f.write(str(total))
        with open(osp.join(work, 'jpeg_bytes')) as f:
            total = int(f.read())
        print(f'image ready: {args.num} JPEG + yml, JPEGs {total / 2**20:.0f} MiB, image '
              f'{osp.getsize(image) / 2**20:.0f} MiB ({time.perf_counter() - t:.0f} s; {work})')
        with open(image, 'rb') as f:  # warm the page cache
            while f.read(1 << 24):
                pass
        cache = osp.join(work, 'cache')
        serial = run(image, 1, cache)
        pool = run(image, min(8, os.cpu_count() or 1), cache)
        assert serial['images'] == pool['images'] == args.num
        print(f'cpus: {os.cpu_count()}')
        got = serial['bytes']
        print(f'serial: {serial["seconds"]:6.2f} s ({serial["cpu"]:.2f} CPU s), JPEG bytes read '
              f'{got / 2**20:.0f} MiB in {serial["reads"]} reads ({got / total:.2f}x the '
              f'JPEGs\' {total / 2**20:.0f} MiB; {got / args.num / 1024:.1f} KiB per image)')
        print(f'pool  : {pool["seconds"]:6.2f} s ({pool["cpu"]:.2f} CPU s)')
    finally:
        if not args.workdir:
            shutil.rmtree(work)


if __name__ == '__main__':
    main()
