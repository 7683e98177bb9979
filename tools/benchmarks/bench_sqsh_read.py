"""One file read through the path training uses: mmengine fileio, the configs' loader, workers.

    python tools/benchmarks/bench_sqsh_read.py [--png 2000] [--workers 2] [--repeat 3]
                                               [--workdir DIR] [--keep]

Writes PNG 224x224 PNGs (bench_sqsh.write_pngs: 85-150 KB, the course's) into
``<workdir>/data/src/unlabeled`` and packs them into ``<workdir>/data/png.sqsh`` (gzip), then,
with a warm page cache (every file read once before it is timed), in this process:
  per read       - microseconds a raw read: the reader itself (``SquashfsImage.read``),
                   ``mmengine.fileio.get('sqsh://...')``, and the unpacked folder through
                   ``fileio.get`` and ``open().read()``; best of REPEAT passes over every file
  calls per read - ``os.stat``/``os.lstat``/``os.fstat`` and ``open_image`` calls made by one
                   ``fileio.get('sqsh://...')`` (counted by wrapping them in this process)
  LoadImageNamed - the configs' transform (Pillow, EXIF orientation ignored): files/s in one
                   process and in WORKERS forked DataLoader workers (persistent, second pass
                   timed, batches of 32), image vs unpacked folder
The figures of the code before a change come from running this script in a ``git archive``
of the earlier commit (the script copied in).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))


def per_read_us(read, paths, repeat: int) -> float:
    best = float('inf')
    for _ in range(repeat):
        t = time.perf_counter()
        for p in paths:
            read(p)
        best = min(best, time.perf_counter() - t)
    return best / len(paths) * 1e6


def count_calls(uris) -> dict:
    """Calls per ``fileio.get`` of a sqsh:// path, by function."""
    from mmengine import fileio

    from custom_modules.fileio import sqsh_backend
    from custom_modules.fileio.squashfs import registry  # open_path calls open_image there
    counts = dict(stat=0, lstat=0, fstat=0, open_image=0)
    saved = dict(stat=os.stat, lstat=os.lstat, fstat=os.fstat, open_image=registry.open_image)

    def wrap(name, fn):
        def counted(*a, **k):
            counts[name] += 1
            return fn(*a, **k)
        return counted
    try:
        for name in ('stat', 'lstat', 'fstat'):
            setattr(os, name, wrap(name, saved[name]))
        registry.open_image = sqsh_backend.open_image = wrap('open_image', saved['open_image'])
        for uri in uris:
            fileio.get(uri)
    finally:
        for name in ('stat', 'lstat', 'fstat'):
            setattr(os, name, saved[name])
        registry.open_image = sqsh_backend.open_image = saved['open_image']
    return {k: v / len(uris) for k, v in counts.items()}


class _Load:
    """Dataset: item i is the shape of file i decoded by the configs' LoadImageNamed."""

    def __init__(self, paths):
        from custom_modules.datasets.transforms.loading import LoadImageNamed
        self.paths = paths
        self.load = LoadImageNamed(imdecode_backend='pillow',
                                   color_type='color_ignore_orientation')

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.load(dict(img_path=self.paths[i]))['img'].shape


def load_rate(paths, workers: int) -> float:
    ds = _Load(paths)
    if workers == 0:
        t = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        return len(ds) / (time.perf_counter() - t)
    import torch.utils.data as tud
    loader = tud.DataLoader(ds, batch_size=32, num_workers=workers, collate_fn=list,
                            multiprocessing_context='fork', persistent_workers=True)
    sum(len(b) for b in loader)
    t = time.perf_counter()
    n = sum(len(b) for b in loader)
    seconds = time.perf_counter() - t
    del loader
    return n / seconds


def strace_count(image: str, uris) -> str:
    """stat-family system calls of N fileio.get in a child process, from ``strace -c``."""
    if not shutil.which('strace'):
        return 'strace not installed'
    code = ('import sys; sys.path.insert(0, %r)\n'
            'from mmengine import fileio\n'
            'import custom_modules.fileio.sqsh_backend\n'
            'uris = %r\n'
            'fileio.get(uris[0])\n'
            'import os; os.write(2, b"START\\n")\n'
            'for u in uris: fileio.get(u)\n') % (ROOT, list(uris))
    out = subprocess.run(['strace', '-f', '-e', 'trace=%%stat,readlink,pread64', '-o',
                          '/dev/stderr', sys.executable, '-c', code],
                         capture_output=True, text=True)
    after = out.stderr.split('START', 1)[-1].splitlines()
    calls = {}
    for line in after:
        parts = line.split(None, 1)
        if len(parts) == 2 and '(' in parts[1]:
            name = parts[1].split('(', 1)[0]
            calls[name] = calls.get(name, 0) + 1
    return ', '.join(f'{k} {v / len(uris):.1f}' for k, v in sorted(calls.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--png', type=int, default=2000)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--workdir', default=None, help='default: a temporary folder')
    ap.add_argument('--keep', action='store_true', help='keep the generated files and image')
    args = ap.parse_args()
    from bench_sqsh import mksquashfs, write_pngs
    work = args.workdir or tempfile.mkdtemp(prefix='bench_sqsh_read-')
    data = osp.join(work, 'data')
    src, image = osp.join(data, 'src'), osp.join(data, 'png.sqsh')
    try:
        if not osp.isfile(image):
            write_pngs(osp.join(src, 'unlabeled'), args.png)
            mksquashfs(src, image)
        os.environ['XDG_CACHE_HOME'] = osp.join(work, 'cache')
        import cv2
        cv2.setNumThreads(1)
        from mmengine import fileio

        import custom_modules.fileio.sqsh_backend  # noqa: F401 (registers sqsh://)
        from custom_modules.fileio import squashfs
        names = sorted(os.listdir(osp.join(src, 'unlabeled')))[:args.png]
        inner = [f'unlabeled/{n}' for n in names]
        uris = [f'sqsh://{image}/{p}' for p in inner]
        files = [osp.join(src, p) for p in inner]
        img = squashfs.open_image(image)
        for u, f in zip(uris, files):  # warm the page cache, check the bytes once
            with open(f, 'rb') as fh:
                assert fileio.get(u) == fh.read()
        print(f'{os.cpu_count()} CPUs; {len(names)} PNGs 224x224 in {image} '
              f'({osp.getsize(image) / 2**20:.0f} MiB); uri e.g. {uris[0]}', flush=True)

        def plain(path):
            with open(path, 'rb') as f:
                return f.read()
        direct = per_read_us(img.read, inner, args.repeat)
        backend = per_read_us(fileio.get, uris, args.repeat)
        local = per_read_us(fileio.get, files, args.repeat)
        opened = per_read_us(plain, files, args.repeat)
        print(f'raw read, us a file: reader {direct:.1f}   fileio.get sqsh:// {backend:.1f} '
              f'(+{backend - direct:.1f} over the reader)   folder fileio.get {local:.1f}   '
              f'folder open().read() {opened:.1f}   ratio sqsh/folder (fileio.get) '
              f'{local / backend:.2f}', flush=True)
        calls = count_calls(uris[:200])
        print('calls per fileio.get(sqsh://): '
              + ', '.join(f'{k} {v:.1f}' for k, v in calls.items()), flush=True)
        print(f'system calls per fileio.get(sqsh://) (strace): {strace_count(image, uris[:50])}',
              flush=True)
        for w in (0, args.workers):
            sq, folder = load_rate(uris, w), load_rate(files, w)
            who = '1 process' if w == 0 else f'{w} DataLoader workers'
            print(f'LoadImageNamed (Pillow) {who:21s} squashfs {sq:7.0f} files/s   unpacked '
                  f'folder {folder:7.0f} files/s   ratio {sq / folder:.2f}', flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
