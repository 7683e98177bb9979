"""Reading a dataset straight out of a squashfs image vs its unpacked folder.

    python tools/benchmarks/bench_sqsh.py [--num 512000] [--png 3000] [--workers 4]
                                          [--workdir /tmp/bench_sqsh] [--keep]

Index part: NUM tiny files in one folder (``unlabeled/000000.png`` ..., the course image's
layout) packed by mksquashfs (gzip, as the default), then
  index cold   - custom_modules.fileio.squashfs: index built from the image (empty cache folder)
  index cached - the same, the on-disk index cache mapped
  unsquashfs   - ``unsquashfs -l`` (list every path) and ``unsquashfs -d`` (unpack: the seed's way)
  scandir walk - listing the unpacked folder (``os.scandir``, recursive)
each in a fresh Python process (time, and the extra RSS: after minus before, peak minus before;
the imports are not counted).
Throughput part: PNG 224x224 PNGs (noise, smoothed: 85-150 KB like the course's) packed by
mksquashfs; files/s reading every file (raw bytes) and reading + ``cv2.imdecode``, in one
process and in WORKERS torch DataLoader workers (fork), vs the unpacked folder on the same files
(``open().read()`` and ``cv2.imread``). The page cache is warm for both (each side is read once
before it is timed).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def write_tiny(folder: str, n: int) -> None:
    os.makedirs(folder)
    for i in range(n):
        with open(osp.join(folder, f'{i:06d}.png'), 'wb') as f:
            f.write(b'%d tiny file %d\n' % (i, i * 7919 % 100003))


def write_pngs(folder: str, n: int, seed: int = 0) -> None:
    import cv2
    os.makedirs(folder)
    rng = np.random.default_rng(seed)
    for i in range(n):
        # coarser noise compresses better: 85-150 KB, some files over the 128 KiB block
        side = int(np.exp(rng.uniform(np.log(12), np.log(160))))
        noise = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        img = cv2.resize(noise, (224, 224), interpolation=cv2.INTER_CUBIC)
        img = cv2.add(img, rng.integers(0, 8, img.shape, dtype=np.uint8))
        cv2.imwrite(osp.join(folder, f'{i:06d}.png'), img)


def mksquashfs(src: str, image: str, *options: str) -> float:
    t = time.perf_counter()
    subprocess.run(['mksquashfs', src, image, '-noappend', '-quiet', '-no-progress', *options],
                   check=True, capture_output=True)
    return time.perf_counter() - t


# one measurement in a fresh process: prints a JSON line {seconds, rss_mb, peak_mb, n}
_CHILD = r'''
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
what, arg, cache = sys.argv[1], sys.argv[2], sys.argv[3]
if what == 'index':
    from custom_modules.fileio import squashfs
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
r0, p0 = rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
if what == 'index':
    image = squashfs.open_image(arg, cache_dir=cache)
    n = image.num_files
    assert squashfs.build_count == (0 if image.from_cache else 1)
else:
    n, stack = 0, [arg]
    paths = []
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir():
                    stack.append(e.path)
                else:
                    paths.append(e.path)
    n = len(paths)
s = time.perf_counter() - t
out = dict(seconds=s, rss_mb=rss() - r0,
           peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - p0, n=n)
if what == 'index':
    t = time.perf_counter()
    assert len(image.files()) == n
    out['files_s'] = time.perf_counter() - t
print(json.dumps(out))
'''


def child(what: str, arg: str, cache: str = '') -> dict:
    out = subprocess.run([sys.executable, '-c', _CHILD.format(root=ROOT), what, arg, cache],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(cmd: list) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def index_part(work: str, n: int, unpack: bool) -> None:
    src = osp.join(work, 'tiny')
    image = osp.join(work, 'tiny.sqsh')
    if not osp.isfile(image):
        t = time.perf_counter()
        write_tiny(osp.join(src, 'unlabeled'), n)
        written = time.perf_counter() - t
        # -no-duplicates: tiny files share a handful of sizes, and mksquashfs's duplicate
        # search compares each file with every earlier one of its size (quadratic)
        seconds = mksquashfs(src, image, '-no-duplicates')
        print(f'wrote {n} tiny files in {written:.1f} s; mksquashfs '
              f'{seconds:.1f} s, image {osp.getsize(image) / 2**20:.1f} MiB', flush=True)
    cache = tempfile.mkdtemp(dir=work, prefix='cache-')
    cold = child('index', image, cache)
    cached = child('index', image, cache)
    assert cold['n'] == cached['n'] == n, (cold, cached, n)
    print(f'index of {n:,} files, cold:   {cold["seconds"]:.2f} s, +{cold["rss_mb"]:.0f} MB RSS '
          f'(peak +{cold["peak_mb"]:.0f} MB)')
    print(f'index of {n:,} files, cached: {cached["seconds"]:.3f} s, +{cached["rss_mb"]:.0f} MB '
          f'RSS (peak +{cached["peak_mb"]:.0f} MB); cache file '
          f'{sum(osp.getsize(osp.join(cache, f)) for f in os.listdir(cache)) / 2**20:.1f} MiB')
    print(f'image.files(): the sorted list of {n:,} paths in {cached["files_s"]:.2f} s')
    print(f'unsquashfs -l (list every path): {timed(["unsquashfs", "-l", image]):.2f} s')
    if unpack:
        out = osp.join(work, 'unpacked')
        shutil.rmtree(out, ignore_errors=True)
        print(f'unsquashfs -d (unpack, the seed\'s way): '
              f'{timed(["unsquashfs", "-q", "-n", "-d", out, image]):.1f} s', flush=True)
        shutil.rmtree(out)
    walk = child('walk', src)
    print(f'scandir walk of the unpacked folder: {walk["seconds"]:.2f} s, +{walk["rss_mb"]:.0f} '
          f'MB RSS (a list of {walk["n"]:,} paths)')
    shutil.rmtree(cache)


class _Reads:
    """Dataset for the loader: item i is the size of file i (raw) or of its decoded image."""

    def __init__(self, read, paths, decode: bool):
        self.read, self.paths, self.decode = read, paths, decode

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        data = self.read(self.paths[i])
        if not self.decode:
            return len(data)
        import cv2
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return img.shape[0]


def _read_file(path: str) -> bytes:
    with open(path, 'rb') as f:
        return f.read()


def rate(read, paths, decode: bool, workers: int) -> float:
    """files/s; with workers: the second pass of persistent workers (no start-up), batches of
    32 sizes (the IPC per batch, not per file)."""
    ds = _Reads(read, paths, decode)
    if workers == 0:
        t = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        return len(paths) / (time.perf_counter() - t)
    import warnings

    import torch.utils.data as tud
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # more workers than this machine's cores
        loader = tud.DataLoader(ds, batch_size=32, num_workers=workers, collate_fn=list,
                                multiprocessing_context='fork', persistent_workers=True)
        n = sum(len(b) for b in loader)
        t = time.perf_counter()
        n = sum(len(b) for b in loader)
        seconds = time.perf_counter() - t
    del loader
    return n / seconds


def throughput_part(work: str, n: int, workers: int) -> None:
    import cv2
    cv2.setNumThreads(1)
    from custom_modules.fileio import squashfs
    src = osp.join(work, 'png')
    image = osp.join(work, 'png.sqsh')
    if not osp.isfile(image):
        t = time.perf_counter()
        write_pngs(osp.join(src, 'unlabeled'), n)
        print(f'wrote {n} PNGs in {time.perf_counter() - t:.1f} s; mksquashfs '
              f'{mksquashfs(src, image):.1f} s', flush=True)
    names = sorted(os.listdir(osp.join(src, 'unlabeled')))
    sizes = [osp.getsize(osp.join(src, 'unlabeled', p)) for p in names]
    print(f'{n} PNGs 224x224, {min(sizes) / 1e3:.0f}-{max(sizes) / 1e3:.0f} KB '
          f'(mean {np.mean(sizes) / 1e3:.0f} KB), image {osp.getsize(image) / 2**20:.0f} MiB')
    img = squashfs.open_image(image, cache_dir=osp.join(work, 'cache-png'))
    inner = [f'unlabeled/{p}' for p in names]
    paths = [osp.join(src, p) for p in inner]
    assert img.files('unlabeled') == inner
    # warm the page cache for both sides, and check the bytes once
    for a, b in zip(inner, paths):
        assert img.read(a) == _read_file(b)
    for decode in (False, True):
        what = 'read + cv2.imdecode' if decode else 'raw read'
        for w in (0, workers):
            sq = rate(img.read, inner, decode, w)
            folder = rate(_read_file, paths, decode, w)
            who = '1 process' if w == 0 else f'{w} DataLoader workers'
            print(f'{what:20s} {who:22s} squashfs {sq:8.0f} files/s   unpacked folder '
                  f'{folder:8.0f} files/s   ratio {sq / folder:.2f}', flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--num', type=int, default=512000, help='tiny files for the index part')
    ap.add_argument('--png', type=int, default=3000, help='224x224 PNGs for the read part')
    ap.add_argument('--workers', type=int, default=4)
    ap.add_argument('--workdir', default=None, help='default: a temporary folder')
    ap.add_argument('--keep', action='store_true', help='keep the generated files and images')
    ap.add_argument('--no-unpack', action='store_true', help='skip timing unsquashfs -d')
    args = ap.parse_args()
    if not shutil.which('mksquashfs'):
        sys.exit('needs mksquashfs and unsquashfs: apt-get install squashfs-tools')
    work = args.workdir or tempfile.mkdtemp(prefix='bench_sqsh-')
    os.makedirs(work, exist_ok=True)
    print(f'{os.cpu_count()} CPUs; work folder {work}', flush=True)
    try:
        if args.num:
            index_part(work, args.num, not args.no_unpack)
        if args.png:
            throughput_part(work, args.png, args.workers)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
