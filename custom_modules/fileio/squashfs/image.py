"""SquashfsImage: one image's index (built or mapped from the cache) and positional reads of its
files, safe across fork."""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import stat
import struct
import threading
import zlib

import numpy as np

from .cache import (INDEX_VERSION, _pack, _read_cache, _remove_stale, _unpack, _write_cache,
                    default_cache_dir)
from .errors import SquashfsError, _changed
from .format import (_BLOCK_UNCOMPRESSED, _NO_FRAGMENT, _SUPERBLOCK, COMPRESSIONS, MAGIC,
                     _decompressor)
from .index import DIR, FILE, _Builder
from .paths import _components

logger = logging.getLogger(__package__)  # one logger for the whole reader

# how many decompressed fragment blocks a process keeps
_FRAGMENT_CACHE = 8

# bumped by every index build in this process (tests check that a cached index is reused)
build_count = 0

_REOPEN_LOCK = threading.Lock()


def _new_lock() -> None:
    """In a forked child: a fresh lock (a thread of the parent may have held it)."""
    global _REOPEN_LOCK
    _REOPEN_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_lock)


class SquashfsImage:
    """One squashfs image: its flat index and positional reads of its files.

    Inner paths are '/'-separated and relative to the image's root ('' is the root).
    """

    def __init__(self, path: str, cache_dir: str | None = None):
        self.path = path
        self.cache_dir = cache_dir
        self._fd = None
        self._pid = None
        self._fragments: dict = {}
        self.from_cache = False
        self._open()

    # -- open and validate
    def _open(self) -> None:
        path = self.path
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
        except FileNotFoundError:
            raise SquashfsError(f'{path}: squashfs image does not exist') from None
        except OSError as e:
            raise SquashfsError(f'{path}: cannot open the squashfs image ({e.strerror})') from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SquashfsError(f'{path}: not a squashfs image (not a regular file)')
            self.identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            head = os.pread(fd, _SUPERBLOCK.size, 0)
            sb = self._superblock(head, st.st_size)
            self._fd, self._pid = fd, os.getpid()
            self._load(fd, st, head, sb)
        except BaseException:
            if self._fd is None:
                os.close(fd)
            raise

    def _superblock(self, head: bytes, file_size: int) -> dict:
        path = self.path
        if len(head) < _SUPERBLOCK.size or struct.unpack_from('<I', head)[0] != MAGIC:
            raise SquashfsError(f'{path}: not a squashfs image (no squashfs magic)')
        v = _SUPERBLOCK.unpack(head)
        names = ('magic', 'inodes', 'mkfs_time', 'block_size', 'fragments', 'compression',
                 'block_log', 'flags', 'ids', 'major', 'minor', 'root_inode', 'bytes_used',
                 'id_table_start', 'xattr_id_table_start', 'inode_table_start',
                 'directory_table_start', 'fragment_table_start', 'export_table_start')
        sb = dict(zip(names, v))
        if (sb['major'], sb['minor']) != (4, 0):
            raise SquashfsError(f'{path}: not a squashfs image of version 4.0 (it has version '
                                f'{sb["major"]}.{sb["minor"]})')
        if sb['bytes_used'] > file_size:
            raise SquashfsError(f'{path}: truncated squashfs image: {file_size} of '
                                f'{sb["bytes_used"]} bytes')
        bs = sb['block_size']
        if bs < 4096 or bs > 1 << 20 or bs & (bs - 1) or 1 << sb['block_log'] != bs:
            raise SquashfsError(f'{path}: damaged squashfs image (block size {bs})')
        if not (_SUPERBLOCK.size <= sb['inode_table_start'] < sb['directory_table_start']
                < sb['bytes_used'] and sb['id_table_start'] < sb['bytes_used']):
            raise SquashfsError(f'{path}: damaged squashfs image (table positions)')
        self._decompress = _decompressor(sb['compression'], path)
        self.compression = COMPRESSIONS[sb['compression']][0]
        self.block_size = bs
        self._bytes_used = sb['bytes_used']
        return sb

    def _key(self, st, head: bytes) -> tuple[str, str]:
        """(digest of the realpath, digest of realpath + size + mtime_ns + superblock)."""
        real = os.path.realpath(self.path).encode('utf-8', 'surrogateescape')
        text = b'\0'.join([real, b'%d' % st.st_size, b'%d' % st.st_mtime_ns,
                           hashlib.sha256(head).hexdigest().encode(), b'%d' % INDEX_VERSION])
        return hashlib.sha256(real).hexdigest()[:16], hashlib.sha256(text).hexdigest()[:32]

    def _load(self, fd: int, st, head: bytes, sb: dict) -> None:
        global build_count
        where, key = self._key(st, head)
        folder = self.cache_dir or default_cache_dir()
        cache = os.path.join(folder, f'{where}-{key}.npy')
        self.cache_path = cache
        arrays = self._try_cache(cache, key)
        if arrays is None:
            lock_fd = None
            try:
                os.makedirs(folder, exist_ok=True)
                lock_fd = os.open(cache + '.lock', os.O_RDWR | os.O_CREAT, 0o666)
                fcntl.flock(lock_fd, fcntl.LOCK_EX)  # one builder per machine, the rest wait
            except OSError as e:
                logger.debug('sqsh index: no lock in %s (%s)', folder, e)
            try:
                arrays = self._try_cache(cache, key)
                if arrays is None:
                    try:
                        built = _Builder(self, fd, sb).build()
                    except IndexError as e:  # a field read past the end of its table
                        raise SquashfsError(f'{self.path}: damaged squashfs image ({e})') from e
                    build_count += 1
                    blob, layout = _pack(built)
                    try:
                        _write_cache(cache, blob, layout, key)
                        arrays = self._try_cache(cache, key)
                        _remove_stale(folder, where, cache)
                    except OSError as e:
                        logger.warning('%s: cannot cache the squashfs index in %s (%s); '
                                       'each process will index the image again', self.path,
                                       folder, e)
                    if arrays is None:
                        arrays = _unpack(blob, layout)
            finally:
                if lock_fd is not None:
                    try:
                        os.remove(cache + '.lock')
                    except OSError:
                        pass
                    os.close(lock_fd)
        else:
            self.from_cache = True
        for name, arr in arrays.items():
            # plain ndarray views of the mapped file: slicing a np.memmap costs microseconds
            setattr(self, '_' + name, np.asarray(arr))
        kind = self._kind
        self.num_files = int(np.count_nonzero(kind == FILE))
        self._dir_cache: dict = {'': 0}
        # the name lookup's views: an item or slice of a memoryview costs a fifth of a numpy
        # array's, and a lookup takes ~20 of each in a folder of 512k names
        self._ends_view = memoryview(self._name_end).cast('B').cast('Q')
        self._names_view = memoryview(self._names).cast('B')

    def _try_cache(self, cache: str, key: str) -> dict | None:
        if not os.path.isfile(cache):
            return None
        try:
            return _read_cache(cache, key)
        except Exception as e:  # a damaged cache is rebuilt, never trusted
            logger.warning('ignoring unreadable squashfs index cache %s (%s)', cache, e)
            return None

    # -- fork (pickling: registry.py, beside open_image)
    def fileno(self) -> int:
        """The image's descriptor in this process (reopened after a fork)."""
        if self._pid != os.getpid():
            with _REOPEN_LOCK:
                if self._pid != os.getpid():
                    try:
                        fd = os.open(self.path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
                    except OSError as e:
                        raise SquashfsError(f'{self.path}: cannot open the squashfs image '
                                            f'again in process {os.getpid()} ({e})') from e
                    st = os.fstat(fd)
                    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self.identity:
                        os.close(fd)
                        raise _changed(self.path)
                    old = self._fd
                    self._fd, self._pid = fd, os.getpid()
                    self._fragments = {}
                    if old is not None:
                        try:
                            os.close(old)  # the parent's copy of the descriptor, in this process
                        except OSError:
                            pass
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
        self._pid = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f'SquashfsImage({self.path!r}, {self.compression}, block {self.block_size}, '
                f'{self.num_files} files)')

    # -- lookups
    def _child(self, d: int, name: bytes) -> int:
        """Index of the child ``name`` of directory entry ``d``, or -1."""
        lo = int(self._a[d])
        hi = lo + int(self._b[d])
        ends, names = self._ends_view, self._names_view
        while lo < hi:
            mid = (lo + hi) >> 1
            here = names[ends[mid]:ends[mid + 1]].tobytes()
            if here < name:
                lo = mid + 1
            elif here > name:
                hi = mid
            else:
                return mid
        return -1

    def _find(self, inner: str) -> int:
        """Entry index of ``inner``, or -1."""
        inner = inner.strip('/')
        i = self._dir_cache.get(inner)
        if i is not None:
            return i
        head, _, last = inner.rpartition('/')
        d = self._dir_cache.get(head)
        if d is None:
            d = 0
            parts = _components(head)
            for part in parts:
                if self._kind[d] != DIR:
                    return -1
                d = self._child(d, part)
                if d < 0:
                    return -1
            if len(self._dir_cache) < 4096 and self._kind[d] == DIR:
                self._dir_cache[head] = d
        if self._kind[d] != DIR:
            return -1
        if last in ('', '.'):
            return d
        return self._child(d, os.fsencode(last))

    def _entry(self, inner: str) -> int:
        i = self._find(inner)
        if i < 0:
            raise FileNotFoundError(f'{self.path}: no {inner!r} in the squashfs image')
        return i

    def exists(self, inner: str) -> bool:
        return self._find(inner) >= 0

    def isfile(self, inner: str) -> bool:
        i = self._find(inner)
        return i >= 0 and self._kind[i] == FILE

    def isdir(self, inner: str) -> bool:
        i = self._find(inner)
        return i >= 0 and self._kind[i] == DIR

    def _file(self, inner: str) -> int:
        i = self._entry(inner)
        if self._kind[i] == DIR:
            raise IsADirectoryError(f'{self.path}: {inner!r} is a folder in the squashfs image')
        if self._kind[i] != FILE:
            raise FileNotFoundError(f'{self.path}: {inner!r} is a symlink or special file in the '
                                    'squashfs image, not a regular file')
        return i

    def size(self, inner: str) -> int:
        return int(self._b[self._file(inner)])

    def _children(self, d: int) -> range:
        start = int(self._a[d])
        return range(start, start + int(self._b[d]))

    def listdir(self, inner: str = '') -> list[tuple[str, bool]]:
        """Immediate children of a folder: (name, is a folder), sorted by name."""
        return [(name, kind == DIR) for name, kind in self.entries(inner)]

    def entries(self, inner: str = '') -> list[tuple[str, int]]:
        """Immediate children of a folder: (name, DIR, FILE or OTHER), sorted by name."""
        d = self._entry(inner)
        if self._kind[d] != DIR:
            raise NotADirectoryError(f'{self.path}: {inner!r} is not a folder in the image')
        r = self._children(d)
        ends = self._name_end[r.start:r.stop + 1].tolist()
        blob = self._names[ends[0]:ends[-1]].tobytes()
        base = ends[0]
        kinds = self._kind[r.start:r.stop].tolist()
        return sorted((os.fsdecode(blob[s - base:e - base]), k)
                      for s, e, k in zip(ends[:-1], ends[1:], kinds))

    def files(self, inner: str = '') -> list[str]:
        """Every regular file under ``inner``, recursively, as inner paths from the image's
        root, sorted."""
        d = self._entry(inner)
        prefix = '/'.join(p for p in inner.split('/') if p and p != '.')
        if self._kind[d] == FILE:
            return [prefix]
        if self._kind[d] != DIR:
            return []
        out = []
        stack = [(d, prefix + '/' if prefix else '')]
        while stack:
            d, pre = stack.pop()
            r = self._children(d)
            ends = self._name_end[r.start:r.stop + 1].tolist()
            base = ends[0]
            blob = self._names[base:ends[-1]].tobytes()
            kinds = self._kind[r.start:r.stop].tolist()
            for i, s, e, k in zip(r, ends[:-1], ends[1:], kinds):
                if k == FILE:
                    out.append(pre + os.fsdecode(blob[s - base:e - base]))
                elif k == DIR:
                    stack.append((i, pre + os.fsdecode(blob[s - base:e - base]) + '/'))
        out.sort()
        return out

    # -- reads
    def _damaged(self, inner: str, what: str) -> SquashfsError:
        return SquashfsError(f'{self.path}: damaged squashfs image: {inner!r} {what}')

    def _pread(self, size: int, offset: int, inner: str) -> bytes:
        if offset + size > self._bytes_used:
            raise self._damaged(inner, f'points past the image end ({offset + size} > '
                                f'{self._bytes_used} bytes)')
        data = os.pread(self.fileno(), size, offset)
        if len(data) != size:
            raise self._damaged(inner, f'is cut off at offset {offset}')
        return data

    def _block(self, raw, compressed: bool, size: int, where: int, inner: str) -> bytes:
        if compressed:
            try:
                raw = self._decompress(raw, size)
            except Exception as e:
                raise self._damaged(inner, f'has a block at offset {where} that does not '
                                    f'decompress ({self.compression}: {e})') from e
        return raw

    def _fragment(self, index: int, inner: str) -> tuple[int, bytes | None]:
        """(disk offset, decompressed block or None when the block is stored uncompressed)."""
        start = int(self._frag_start[index])
        size = int(self._frag_size[index])
        if size & _BLOCK_UNCOMPRESSED:
            return start, None
        data = self._fragments.get(index)
        if data is None:
            raw = self._pread(size & 0xFFFFFF, start, inner)
            data = self._block(raw, True, self.block_size, start, inner)
            if len(self._fragments) >= _FRAGMENT_CACHE:
                self._fragments.pop(next(iter(self._fragments)))
            self._fragments[index] = data
        return start, data

    def read_head(self, inner: str, size: int) -> bytes:
        """The start of the regular file ``inner``, at least its first ``size`` bytes (or all
        of it), reading only what holds them: an image header without the pixels.

        Within the first block: stored uncompressed, just ``size`` bytes are read; gzip, a
        prefix of the block is read and inflated as far as ``size`` bytes (its checksum, at the
        block's end, is not checked: the full read that loads the image does). Further: the
        whole blocks that hold the head (a compressed block inflates only whole), and of a tail
        in a fragment block the whole block when it is compressed (cached: the files packed
        with it read it again for free), else just the bytes asked."""
        i = self._file(inner)
        fsize, bs = int(self._b[i]), self.block_size
        if 0 < size <= bs and fsize > size and (fsize >= bs or
                                                 int(self._frag_idx[i]) == _NO_FRAGMENT):
            first = int(self._blocks[int(self._blk[i])])
            pos, disk = int(self._a[i]), first & 0xFFFFFF
            if first & _BLOCK_UNCOMPRESSED:
                return self._pread(size, pos, inner)
            if disk and self.compression == 'gzip':
                # deflate grows incompressible data by a few bytes per 64 KiB at most, so the
                # first size + 1 KiB bytes nearly always hold the first size bytes
                raw = self._pread(min(disk, size + 1024), pos, inner)
                try:
                    data = zlib.decompressobj().decompress(raw, size)
                except zlib.error as e:
                    raise self._damaged(inner, f'has a block at offset {pos} that does not '
                                        f'decompress (gzip: {e})') from e
                if len(data) == size:
                    return data
        return self.read(inner, size)

    def read(self, inner: str, head: int | None = None) -> bytes:
        """The bytes of the regular file ``inner``. FileNotFoundError when there is none;
        SquashfsError when its data cannot be read. ``head``: see :meth:`read_head`."""
        i = self._file(inner)
        fsize = int(self._b[i])
        if fsize == 0:
            return b''
        bs = self.block_size
        frag = int(self._frag_idx[i])
        n = fsize // bs if frag != _NO_FRAGMENT else -(-fsize // bs)
        if head is not None and -(-head // bs) <= n:  # the blocks hold the head: no tail
            n, frag = -(-head // bs), _NO_FRAGMENT
        parts = []
        if n:
            first = int(self._blk[i])
            sizes = self._blocks[first:first + n].tolist()
            disk = [s & 0xFFFFFF for s in sizes]
            pos = int(self._a[i])
            raw = self._pread(sum(disk), pos, inner)
            view = memoryview(raw)
            p = 0
            for k, (s, d) in enumerate(zip(sizes, disk)):
                want = min(bs, fsize - k * bs)
                if d == 0:
                    parts.append(bytes(want))  # sparse block
                    continue
                data = raw if d == len(raw) else view[p:p + d]
                data = self._block(data, not s & _BLOCK_UNCOMPRESSED, want, pos + p, inner)
                if len(data) != want:
                    raise self._damaged(inner, f'has a block at offset {pos + p} of '
                                        f'{len(data)} bytes instead of {want}')
                parts.append(data)
                p += d
        if frag != _NO_FRAGMENT:
            tail = fsize - n * bs
            off = int(self._frag_off[i])
            start, block = self._fragment(frag, inner)
            if block is None:
                if off + tail > int(self._frag_size[frag]) & 0xFFFFFF:
                    raise self._damaged(inner, 'has a tail past the end of its fragment block')
                data = self._pread(tail if head is None else min(tail, head - n * bs),
                                   start + off, inner)
            else:
                data = block[off:off + tail]
                if len(data) != tail:
                    raise self._damaged(inner, 'has a tail past the end of its fragment block')
            parts.append(data)
        return bytes(parts[0]) if len(parts) == 1 else b''.join(parts)
