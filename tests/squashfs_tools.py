"""squashfs images for tests: Debian's mksquashfs, and a small source tree that covers the
format's cases.

:func:`mksquashfs_unavailable` installs Debian's ``squashfs-tools`` when missing (``apt-get``,
as root), like tests/slurm_cluster.py does for Slurm, and says why it cannot be had otherwise,
so tests skip with that reason instead of silently.
"""
import hashlib
import os
import subprocess

from debian_packages import install_missing

PACKAGES = ('squashfs-tools',)
BINARIES = ('mksquashfs', 'unsquashfs')


def mksquashfs_unavailable() -> str | None:
    """None when mksquashfs exists or was just installed, else the reason."""
    return install_missing(BINARIES, PACKAGES, 'squashfs-tools')


def mksquashfs(src: str, image: str, *options: str) -> str:
    """Pack the folder ``src`` into ``image`` (replaced if present) and return its path."""
    if os.path.exists(image):
        os.remove(image)
    subprocess.run(['mksquashfs', src, image, '-noappend', '-quiet', '-no-progress',
                    '-processors', '1', *options], check=True, capture_output=True, text=True)
    return image


def make_tree(root: str, block_size: int = 4096) -> str:
    """A source tree with every case the reader handles, small enough to pack in a blink.

    Files: empty; under, at and over the block size; several blocks plus a tail; compressible
    text and incompressible bytes (stored uncompressed by mksquashfs); an all-zero block in the
    middle of a file (written as a sparse block); duplicates; a hard link and a folder with a
    long listing (extended inodes); a symlink; nested and empty folders; names with spaces,
    unicode and '.' prefixes."""
    rng = _Random(1)
    bs = block_size
    files = {
        'empty.txt': b'',
        'tiny.txt': b'x',
        'a/text.txt': b''.join(b'line %d of a compressible file\n' % i for i in range(600)),
        'a/random.bin': rng.bytes(bs * 3 + 123),
        'a/exact_block.bin': rng.bytes(bs),
        'a/two_blocks.bin': rng.bytes(2 * bs),
        'a/b/c/deep.txt': b'deep\n' * 50,
        'a/b/c/d/e/deepest.bin': rng.bytes(bs + 1),
        'a/b/sparse.bin': rng.bytes(bs) + bytes(2 * bs) + rng.bytes(bs // 2),
        'a/b/zeros.bin': bytes(3 * bs + 10),
        'a/dup1.bin': b'same content\n' * 400,
        'a/dup2.bin': b'same content\n' * 400,
        'names/with space.txt': b'space',
        'names/\u00e9t\u00e9.txt': 'unicode name'.encode(),
        'names/.hidden': b'hidden',
        'names/a.b': b'dot',
        'names/a-b': b'dash',
        'names/a': b'no suffix',
        'big/many_blocks.txt': b''.join(b'%08d\n' % i for i in range(bs * 5 // 9 + 7)),
    }
    for i in range(40):  # a folder of many small files: several fragment blocks
        files[f'many/{i:03d}.bin'] = rng.bytes(int(rng.integers(1, bs // 3)))
    for i in range(400):  # a listing over one 8 KiB metadata block: an extended folder inode
        files[f'wide/a_file_with_a_rather_long_name_{i:04d}.txt'] = b'%d\n' % i
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)
    # a hard link: two names, one extended file inode
    os.link(os.path.join(root, 'a', 'text.txt'), os.path.join(root, 'names', 'hardlink.txt'))
    os.symlink('../tiny.txt', os.path.join(root, 'names', 'symlink'))
    os.makedirs(os.path.join(root, 'empty_dir'))
    os.makedirs(os.path.join(root, 'a', 'b', 'empty_nested'))
    return root


class _Random:
    def __init__(self, seed: int):
        import numpy as np
        self.rng = np.random.default_rng(seed)

    def bytes(self, n: int) -> bytes:
        return self.rng.bytes(n)

    def integers(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi))


def tree_hashes(root: str) -> dict[str, str]:
    """SHA-256 of every regular file under ``root``, by '/'-separated relative path."""
    out = {}
    for here, dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(here, name)
            if os.path.islink(path):
                continue
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root).replace(os.sep, '/')] = \
                    hashlib.sha256(f.read()).hexdigest()
    return out


def hash_all(image, paths) -> dict[str, str]:
    """SHA-256 of each inner path read from ``image`` (a SquashfsImage)."""
    return {p: hashlib.sha256(image.read(p)).hexdigest() for p in paths}


class HashDataset:
    """A map-style dataset: item i is (path, SHA-256 of the file read out of the image, worker
    pid, whether the worker's image came from the index cache, the worker's index builds).
    Holds the image object itself, opened by the caller before the loader's workers start."""

    def __init__(self, image, paths):
        self.image, self.paths = image, list(paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from custom_modules.fileio import squashfs
        p = self.paths[i]
        return (p, hashlib.sha256(self.image.read(p)).hexdigest(), os.getpid(),
                self.image.from_cache, squashfs.build_count)
