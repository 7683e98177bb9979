"""The squashfs reader at the course image's entry counts: index of NUM PNGs with real
fragments, and read + decode with a cold page cache.

    python tools/benchmarks/bench_sqsh_scale.py [--num 512000] [--side 32] [--block 4096]
                                                [--course-pngs] [--sample 20000] [--workers 2]
                                                [--workdir DIR] [--keep]

The course image holds 512,000 PNGs of about 110 KB in 128 KiB blocks: each file is a tail in
a fragment block of its own, so the image has about as many fragment entries as files (56 GB,
more than this machine's disk). Here NUM noise PNGs SIDE x SIDE (32: about 3.1 KB, stored
uncompressed as they do not shrink) are packed with a BLOCK-byte block (4096: one tail a
fragment block), which gives the same numbers of inodes, folder entries and fragment entries
in a few GB (``--course-pngs --block 131072``: 224x224 PNGs of 85-150 KB like the course's
instead, for the read figures at their size). Then:
  index cold / cached - custom_modules.fileio.squashfs in a fresh process (bench_sqsh.child:
                        time, extra RSS and peak); cold once with the image in the page cache,
                        once after dropping it
  cold read + decode  - SAMPLE files in random order through ``mmengine.fileio`` and the
                        configs' LoadImageNamed (Pillow), in one process and in WORKERS forked
                        DataLoader workers, after ``sync; echo 3 > /proc/sys/vm/drop_caches``
                        (the index cache file dropped too); the unpacked folder alike; then the
                        same pass again with the cache warm
Where the page cache cannot be dropped (not root, a read-only /proc/sys) each file's pages are
dropped with ``posix_fadvise(DONTNEED)`` instead, and the script says so. On a virtual machine
the host may still cache the disk: "cold" is this system's page cache only.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))


def write_small_pngs(folder: str, n: int, side: int) -> list:
    import cv2
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    sizes = []
    for i in range(n):
        ok, buf = cv2.imencode('.png', rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        with open(osp.join(folder, f'{i:06d}.png'), 'wb') as f:
            f.write(buf)
        sizes.append(len(buf))
    return sizes


def drop_caches(paths) -> str:
    """Empty the page cache: all of it where allowed, else the pages of ``paths``."""
    subprocess.run(['sync'], check=True)
    try:
        with open('/proc/sys/vm/drop_caches', 'w') as f:
            f.write('3\n')
        return 'drop_caches'
    except OSError as e:
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        return f'posix_fadvise DONTNEED per file (drop_caches: {e.strerror})'


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--num', type=int, default=512000)
    ap.add_argument('--side', type=int, default=32)
    ap.add_argument('--block', type=int, default=4096)
    ap.add_argument('--course-pngs', action='store_true',
                    help="224x224 PNGs of 85-150 KB like the course's (bench_sqsh.write_pngs) "
                         'instead of SIDE x SIDE noise')
    ap.add_argument('--sample', type=int, default=20000)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--workdir', default=None, help='default: a temporary folder')
    ap.add_argument('--keep', action='store_true', help='keep the generated files and image')
    args = ap.parse_args()
    from bench_sqsh import child, mksquashfs, write_pngs
    work = args.workdir or tempfile.mkdtemp(prefix='bench_sqsh_scale-')
    os.makedirs(work, exist_ok=True)
    src, image = osp.join(work, 'src'), osp.join(work, f'png{args.num}.sqsh')
    folder = osp.join(src, 'unlabeled')
    print(f'{os.cpu_count()} CPUs; work folder {work}', flush=True)
    try:
        if not osp.isfile(image):
            t = time.perf_counter()
            if args.course_pngs:
                write_pngs(folder, args.num)
                sizes, side = [osp.getsize(osp.join(folder, n)) for n in os.listdir(folder)], 224
            else:
                sizes, side = write_small_pngs(folder, args.num, args.side), args.side
            print(f'wrote {args.num:,} PNGs {side}x{side} ({min(sizes):,}-'
                  f'{max(sizes):,} bytes) in {time.perf_counter() - t:.0f} s', flush=True)
            # -no-duplicates: many files share a size, and the duplicate search compares each
            # file with every earlier one of its size
            seconds = mksquashfs(src, image, '-b', str(args.block), '-no-duplicates')
            print(f'mksquashfs -b {args.block}: {seconds:.0f} s', flush=True)
        with open(image, 'rb') as f:
            inodes, _, block, fragments = struct.unpack_from('<IIII', f.read(96), 4)
        print(f'image {osp.getsize(image) / 2**30:.2f} GiB: {inodes:,} inodes, block {block}, '
              f'{fragments:,} fragment entries', flush=True)

        cache = osp.join(work, 'cache')
        shutil.rmtree(cache, ignore_errors=True)
        cold = child('index', image, cache)
        print(f'index cold:   {cold["seconds"]:.2f} s, +{cold["rss_mb"]:.0f} MB RSS (peak '
              f'+{cold["peak_mb"]:.0f} MB) for {cold["n"]:,} files', flush=True)
        shutil.rmtree(cache)
        how = drop_caches([image])
        cold = child('index', image, cache)
        print(f'index cold, page cache dropped too ({how}): {cold["seconds"]:.2f} s, '
              f'+{cold["rss_mb"]:.0f} MB RSS (peak +{cold["peak_mb"]:.0f} MB)', flush=True)
        cached = child('index', image, cache)
        print(f'index cached: {cached["seconds"]:.3f} s, +{cached["rss_mb"]:.0f} MB RSS (peak '
              f'+{cached["peak_mb"]:.0f} MB); cache file '
              f'{sum(osp.getsize(osp.join(cache, f)) for f in os.listdir(cache)) / 2**20:.1f} MiB',
              flush=True)

        os.environ['XDG_CACHE_HOME'] = work  # the index cache built above: <work>/sqsh-index
        os.makedirs(osp.join(work, 'sqsh-index'), exist_ok=True)
        for f in os.listdir(cache):
            shutil.copyfile(osp.join(cache, f), osp.join(work, 'sqsh-index', f))
        import cv2
        cv2.setNumThreads(1)
        import custom_modules.fileio.sqsh_backend  # noqa: F401 (registers sqsh://)
        names = sorted(os.listdir(folder))
        pick = random.Random(0).sample(names, min(args.sample, len(names)))
        uris = [f'sqsh://{image}/unlabeled/{n}' for n in pick]
        files = [osp.join(folder, n) for n in pick]
        for w in (0, args.workers):
            who = '1 process' if w == 0 else f'{w} DataLoader workers'
            for what, paths, drop in (('squashfs', uris, [image]), ('folder', files, files)):
                how = drop_caches(drop)
                cold_rate = load_rate_once(paths, w)
                warm_rate = load_rate_once(paths, w)
                print(f'read + LoadImageNamed, {len(paths):,} random files, {who:21s} '
                      f'{what:8s}: cold {cold_rate:7.0f} files/s, warm {warm_rate:7.0f} '
                      f'files/s   ({how})', flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def load_rate_once(paths, workers: int) -> float:
    """files/s of one pass (workers started inside the timing: a cold pass is one pass)."""
    from bench_sqsh_read import _Load
    ds = _Load(paths)
    t = time.perf_counter()
    if workers == 0:
        for i in range(len(ds)):
            ds[i]
    else:
        import torch.utils.data as tud
        loader = tud.DataLoader(ds, batch_size=32, num_workers=workers, collate_fn=list,
                                multiprocessing_context='fork')
        for _ in loader:
            pass
    return len(paths) / (time.perf_counter() - t)


if __name__ == '__main__':
    main()
