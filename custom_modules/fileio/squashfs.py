"""Read files straight out of a squashfs 4.0 image: no unpacking, no root, no FUSE.

The course ships its unlabeled set as ``unlabeled_224.sqsh`` (512,000 PNGs). The whole tree is
decoded once into flat numpy arrays, cached on disk and memory-mapped by every later open, loader
worker and rank; every read is an ``os.pread``. Why this design, with measurements:
docs/performance.md, "How the squashfs reader works".
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import lzma
import os
import stat
import struct
import threading
import zlib
from array import array

import numpy as np

from ..errors import UserError
from .atomic_local import atomic_open

logger = logging.getLogger(__name__)

MAGIC = 0x73717368  # 'hsqs'
SCHEME = 'sqsh://'
# bump when the cached index format changes: old caches are then never read
INDEX_VERSION = 1
_SUPERBLOCK = struct.Struct('<IIIIIHHHHHHQQQQQQQQ')  # 96 bytes
_NO_FRAGMENT = 0xFFFFFFFF
_NO_TABLE = 0xFFFFFFFFFFFFFFFF
_METADATA_SIZE = 8192
_BLOCK_UNCOMPRESSED = 1 << 24
_FLAG_NO_FRAGMENTS = 0x10
_FLAG_EXPORTABLE = 0x80
_FLAG_COMPRESSOR_OPTIONS = 0x400
# entry kinds in the index
DIR, FILE, OTHER = 1, 2, 3
# how many decompressed fragment blocks a process keeps
_FRAGMENT_CACHE = 8

REPACK = ('repack it with gzip: unsquashfs -d unpacked {image} && '
          'mksquashfs unpacked new.sqsh -comp gzip')

# id: (name, PyPI package or None for the standard library, pip pin)
COMPRESSIONS = {
    1: ('gzip', None),
    2: ('lzma', None),
    3: ('lzo', 'lzallright'),
    4: ('xz', None),
    5: ('lz4', 'lz4'),
    6: ('zstd', 'zstandard'),
}

# bumped by every index build in this process (tests check that a cached index is reused)
build_count = 0


class SquashfsError(UserError):
    """An image that cannot be read: not squashfs, truncated, damaged, or an unsupported
    compression. The message always names the image file."""


class ImageChangedError(SquashfsError):
    """The image file was replaced, rewritten or removed while this process read it. Never a
    reason to read the new file instead: the index and every read so far came from the old one."""


def _changed(path: str, how: str = '') -> ImageChangedError:
    return ImageChangedError(f'{path}: the squashfs image changed on disk while it was in use'
                             f'{how}; a run reads one image from start to end: restart it')


def default_cache_dir() -> str:
    """``<XDG_CACHE_HOME or ~/.cache>/sqsh-index``, beside the labeled index's cache."""
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'sqsh-index')


# ----------------------------------------------------------------------------------- paths

def split_image_path(path: str) -> tuple[str, str] | None:
    """(image file, path inside it) for a path that goes through a squashfs image file.

    ``path`` may start with ``sqsh://``. Its components are walked from the start: the first
    prefix that is an existing regular file is the image; the rest, '/'-separated without
    leading or trailing '/', is the inner path ('' for the image's root). None when no prefix
    is a regular file. Does not open the file.
    """
    if path.startswith(SCHEME):
        path = path[len(SCHEME):]
    if not path:
        return None
    parts = path.split('/')
    prefix = '/' if path.startswith('/') else ''
    for i, part in enumerate(parts):
        if not part:
            continue
        prefix = os.path.join(prefix, part) if prefix else part
        try:
            st = os.stat(prefix)
        except OSError:
            return None
        if stat.S_ISREG(st.st_mode):
            return prefix, '/'.join(p for p in parts[i + 1:] if p and p != '.')
        if not stat.S_ISDIR(st.st_mode):
            return None
    return None


def _components(inner: str) -> list[bytes]:
    return [os.fsencode(p) for p in inner.split('/') if p and p != '.']


# ---------------------------------------------------------------------------- decompressors

def _decompressor(comp_id: int, image: str):
    """A function (data, max_size) -> bytes for this compression, or SquashfsError."""
    if comp_id not in COMPRESSIONS:
        raise SquashfsError(f'{image}: unknown squashfs compression id {comp_id}; '
                            + REPACK.format(image=image))
    name, package = COMPRESSIONS[comp_id]
    try:
        if name == 'gzip':
            return lambda data, size: zlib.decompress(data, 15, size)
        if name == 'xz':
            return lambda data, size: lzma.decompress(data, lzma.FORMAT_XZ)
        if name == 'lzma':
            return lambda data, size: lzma.decompress(data, lzma.FORMAT_ALONE)
        if name == 'zstd':
            import zstandard
            dctx = zstandard.ZstdDecompressor()
            return lambda data, size: dctx.decompress(data, max_output_size=size)
        if name == 'lz4':
            import lz4.block
            return lambda data, size: lz4.block.decompress(data, uncompressed_size=size)
        if name == 'lzo':
            from lzallright import LZOCompressor
            return lambda data, size: LZOCompressor.decompress(data, output_size_hint=size)
    except ImportError as e:
        raise SquashfsError(
            f'{image}: compressed with {name}, which needs the Python package {package} '
            f'(pip install -r requirements.txt installs it), or ' + REPACK.format(image=image)
        ) from e
    raise AssertionError(name)


# ------------------------------------------------------------------------------ index build

def _u(buf: np.ndarray, pos: np.ndarray, nbytes: int) -> np.ndarray:
    """Little-endian unsigned ints of ``nbytes`` at byte positions ``pos`` of uint8 ``buf``."""
    if len(pos) == 0:
        return np.zeros(0, np.uint64)
    if int(pos.max()) + nbytes > len(buf) or int(pos.min()) < 0:
        raise IndexError('field outside its table')
    rows = np.lib.stride_tricks.as_strided(buf, (len(buf) - nbytes + 1, nbytes), (1, 1))
    return np.ascontiguousarray(rows[pos]).view(f'<u{nbytes}').ravel()


class _Builder:
    """Decode the inode and directory tables of an image into flat arrays."""

    def __init__(self, img: 'SquashfsImage', fd: int, sb: dict) -> None:
        self.img, self.fd, self.sb = img, fd, sb

    def damaged(self, what: str) -> SquashfsError:
        return SquashfsError(f'{self.img.path}: damaged squashfs image ({what})')

    def pread(self, size: int, offset: int) -> bytes:
        # a damaged table position may be any 64-bit number: os.pread takes no offset over 2**63
        if offset + size > self.sb['bytes_used']:
            raise self.damaged(f'{size} bytes at offset {offset} are past the end of the image '
                               f'({self.sb["bytes_used"]} bytes)')
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise self.damaged(f'{size} bytes at offset {offset} are past the end of the file')
        return data

    def metadata(self, start: int, end: int) -> tuple[bytes, dict]:
        """Decompressed metadata blocks in [start, end) and {block offset from start:
        position in the result}."""
        raw = self.pread(end - start, start)
        out, where, p, n = [], {}, 0, 0
        decompress = self.img._decompress
        while p < len(raw):
            if p + 2 > len(raw):
                raise self.damaged(f'metadata block header at {start + p} cut off')
            header = raw[p] | raw[p + 1] << 8
            size = header & 0x7FFF
            data = raw[p + 2:p + 2 + size]
            if len(data) != size or size == 0:
                raise self.damaged(f'metadata block at {start + p} cut off')
            if not header & 0x8000:
                try:
                    data = decompress(data, _METADATA_SIZE)
                except Exception as e:
                    raise self.damaged(f'metadata block at {start + p}: {e}') from e
            where[p] = n
            out.append(data)
            n += len(data)
            p += 2 + size
        return b''.join(out), where

    def table(self, start: int, count: int, entry_size: int) -> bytes:
        """A lookup table: ``count`` entries in metadata blocks listed at ``start``."""
        nbytes = count * entry_size
        nblocks = -(-nbytes // _METADATA_SIZE)
        pointers = struct.unpack(f'<{nblocks}Q', self.pread(8 * nblocks, start))
        out = []
        for ptr in pointers:
            raw = self.pread(2, ptr)
            size = (raw[0] | raw[1] << 8) & 0x7FFF
            data, _ = self.metadata(ptr, ptr + 2 + size)
            out.append(data)
        data = b''.join(out)
        if len(data) < nbytes:
            raise self.damaged('lookup table too short')
        return data[:nbytes]

    def build(self) -> dict:
        sb = self.sb
        block_size = sb['block_size']
        # the directory table ends where the first table written after it begins (at its own
        # start when it is empty: an image of an empty folder)
        ends = [sb['bytes_used']]
        ends.append(struct.unpack('<Q', self.pread(8, sb['id_table_start']))[0])
        if sb['fragments'] and sb['fragment_table_start'] != _NO_TABLE:
            ends.append(struct.unpack('<Q', self.pread(8, sb['fragment_table_start']))[0])
        if sb['export_table_start'] != _NO_TABLE:
            ends.append(struct.unpack('<Q', self.pread(8, sb['export_table_start']))[0])
        if sb['xattr_id_table_start'] != _NO_TABLE:
            ends.append(sb['xattr_id_table_start'])
        dir_end = min(e for e in ends if e >= sb['directory_table_start'])
        ibytes, imap = self.metadata(sb['inode_table_start'], sb['directory_table_start'])
        dbytes, dmap = self.metadata(sb['directory_table_start'], dir_end)
        ibuf = np.frombuffer(ibytes, np.uint8)
        dbuf = np.frombuffer(dbytes, np.uint8)

        if sb['fragments']:
            frag = np.frombuffer(self.table(sb['fragment_table_start'], sb['fragments'], 16),
                                 np.dtype([('start', '<u8'), ('size', '<u4'), ('x', '<u4')]))
            frag_start, frag_size = frag['start'].copy(), frag['size'].copy()
        else:
            frag_start, frag_size = np.zeros(0, np.uint64), np.zeros(0, np.uint32)

        def inode_pos(block: int, offset: int) -> int:
            if block not in imap:
                raise self.damaged(f'inode reference to block {block}, not a metadata block')
            return imap[block] + offset

        root = sb['root_inode']
        # per entry, level by level (a directory's children are contiguous, in name order)
        root_pos = np.array([inode_pos(root >> 16, root & 0xFFFF)], np.int64)
        kinds, inos, names = [np.array([DIR], np.uint8)], [root_pos], [b'']
        name_lens = [np.zeros(1, np.int64)]
        child_start = {0: 0}
        child_count = {0: 0}
        level = np.array([0]), root_pos
        type_counts = np.zeros(15, np.int64)  # inodes by type (1-7 basic, 8-14 extended)
        type_counts[_u(ibuf, root_pos, 2)[0] % 15] += 1
        total, folders = 1, 1
        while len(level[0]):
            idx, pos = level
            folders += len(idx)
            if folders > sb['inodes'] + 1:  # a damaged listing that leads back to a parent
                raise self.damaged('more folders than inodes')
            types = _u(ibuf, pos, 2)
            ext = types == 8
            if not np.all((types == 1) | ext):
                raise self.damaged('directory inode of another type')
            bas = ~ext
            block, size, offset = (np.zeros(len(pos), np.int64) for _ in range(3))
            block[bas] = _u(ibuf, pos[bas] + 16, 4)
            size[bas] = _u(ibuf, pos[bas] + 24, 2)
            offset[bas] = _u(ibuf, pos[bas] + 26, 2)
            block[ext] = _u(ibuf, pos[ext] + 24, 4)
            size[ext] = _u(ibuf, pos[ext] + 20, 4)
            offset[ext] = _u(ibuf, pos[ext] + 34, 2)
            # an empty folder (listing size 3) has no listing to point to
            starts = [dmap.get(b, -1) if n > 3 else 0
                      for b, n in zip(block.tolist(), size.tolist())]
            if -1 in starts:
                raise self.damaged('directory reference to a block that is not a metadata block')
            lst_start = (np.array(starts, np.int64) + offset).tolist()
            lst_len = np.maximum(size - 3, 0).tolist()
            # the one Python loop over every entry: collect offsets, types and names
            h_block, h_count, e_off, e_names = [], [], array('q'), []
            counts = []
            db = dbytes
            unpack = struct.unpack_from
            try:
                for p, length in zip(lst_start, lst_len):
                    end = p + length
                    n0 = len(e_off)
                    while p < end:
                        count, start, _ = unpack('<III', db, p)
                        p += 12
                        count += 1
                        h_block.append(start)
                        h_count.append(count)
                        for _ in range(count):
                            e_off.append(p)
                            n = db[p + 6] | db[p + 7] << 8
                            e_names.append(db[p + 8:p + 9 + n])
                            p += 9 + n
                    if p != end:
                        raise self.damaged('directory listing does not end where its inode says')
                    counts.append(len(e_off) - n0)
            except (struct.error, IndexError) as e:
                raise self.damaged(f'directory listing past the end of its table: {e}') from e
            epos = np.frombuffer(e_off, np.int64)
            m = len(epos)
            if any(h > 256 for h in h_count):
                raise self.damaged('directory header with more than 256 entries')
            # inode of each entry: its header's metadata block + the entry's offset
            bases = [imap.get(b, -1) for b in h_block]
            if -1 in bases:
                raise self.damaged('inode reference to a block that is not a metadata block')
            e_inode = (np.repeat(np.array(bases, np.int64), h_count)
                       + _u(dbuf, epos, 2).astype(np.int64))
            e_len = np.fromiter(map(len, e_names), np.int64, m)
            # a name with '/' or NUL, or '.' or '..', is listed but can never be looked up
            blob = b''.join(e_names)
            if b'/' in blob or b'\0' in blob or any(
                    e_names[k] in (b'.', b'..') for k in np.flatnonzero(e_len <= 2).tolist()):
                raise self.damaged("a name with '/' or NUL, or '.' or '..', in a folder listing")
            # name order inside each directory (mksquashfs writes them sorted; do not rely on it)
            order = np.arange(m)
            first = total
            pos0 = 0
            for d, c in zip(idx.tolist(), counts):
                child_start[d] = first + pos0
                child_count[d] = c
                chunk = e_names[pos0:pos0 + c]
                if any(a >= b for a, b in zip(chunk, chunk[1:])):
                    srt = sorted(range(c), key=chunk.__getitem__)
                    order[pos0:pos0 + c] = pos0 + np.array(srt, np.int64)
                pos0 += c
            if not np.array_equal(order, np.arange(m)):
                e_inode = e_inode[order]
                e_len = e_len[order]
                e_names = [e_names[i] for i in order.tolist()]
                blob = b''.join(e_names)
            itype = _u(ibuf, e_inode, 2).astype(np.int64)
            type_counts += np.bincount(itype, minlength=15)[:15]
            if m and (itype.min() < 1 or itype.max() > 14):
                raise self.damaged('inode of an unknown type')
            basic = (itype - 1) % 7 + 1
            kind = np.full(m, OTHER, np.uint8)
            kind[basic == 1] = DIR
            kind[basic == 2] = FILE
            kinds.append(kind)
            inos.append(e_inode)
            names.append(blob)
            name_lens.append(e_len)
            sub = np.flatnonzero(kind == DIR)
            level = (sub + first, e_inode[sub])
            total += m
            del e_names

        kind = np.concatenate(kinds)
        ino = np.concatenate(inos)
        name_end = np.zeros(total + 1, np.uint64)
        np.cumsum(np.concatenate(name_lens), out=name_end[1:])
        names_blob = np.frombuffer(b''.join(names), np.uint8)

        # files: start of blocks, size, fragment, offset in fragment, block sizes
        f = np.flatnonzero(kind == FILE)
        fpos = ino[f]
        fext = _u(ibuf, fpos, 2) == 9
        fb, fe = fpos[~fext], fpos[fext]
        a = np.zeros(total, np.uint64)  # dir: first child; file: start of its blocks
        b = np.zeros(total, np.uint64)  # dir: number of children; file: size
        frag_idx = np.full(total, _NO_FRAGMENT, np.uint32)
        frag_off = np.zeros(total, np.uint32)
        blk = np.zeros(total, np.uint64)  # file: index of its first block size in `blocks`
        a[f[~fext]] = _u(ibuf, fb + 16, 4)
        frag_idx[f[~fext]] = _u(ibuf, fb + 20, 4)
        frag_off[f[~fext]] = _u(ibuf, fb + 24, 4)
        b[f[~fext]] = _u(ibuf, fb + 28, 4)
        a[f[fext]] = _u(ibuf, fe + 16, 8)
        b[f[fext]] = _u(ibuf, fe + 24, 8)
        frag_idx[f[fext]] = _u(ibuf, fe + 44, 4)
        frag_off[f[fext]] = _u(ibuf, fe + 48, 4)
        list_pos = np.where(fext, fpos + 56, fpos + 32)
        fsize = b[f]
        has_frag = frag_idx[f] != _NO_FRAGMENT
        nblocks = np.where(has_frag, fsize // block_size,
                           (fsize + block_size - 1) // block_size).astype(np.int64)
        if np.any(frag_idx[f][has_frag] >= max(sb['fragments'], 0)):
            raise self.damaged('file with a fragment index past the fragment table')
        if np.any(list_pos + 4 * nblocks > len(ibuf)):
            raise self.damaged('file inode with more blocks than its table holds')
        first_block = np.zeros(len(f), np.int64)
        np.cumsum(nblocks[:-1], out=first_block[1:])
        blk[f] = first_block
        nb = int(nblocks.sum())
        within = np.arange(nb, dtype=np.int64) - np.repeat(first_block, nblocks)
        blocks = _u(ibuf, np.repeat(list_pos, nblocks) + 4 * within, 4).astype(np.uint32)
        del within
        for d, s in child_start.items():
            a[d] = s
            b[d] = child_count[d]
        return dict(types=type_counts, kind=kind, a=a, b=b, frag_idx=frag_idx, frag_off=frag_off,
                    blk=blk, name_end=name_end, names=names_blob, blocks=blocks,
                    frag_start=frag_start.astype(np.uint64),
                    frag_size=frag_size.astype(np.uint32))


# ----------------------------------------------------------------------------- index cache

def _pack(arrays: dict) -> tuple[np.ndarray, dict]:
    """One uint8 array holding every array at a 64-byte aligned offset, and their layout."""
    layout, offset = {}, 0
    for name, arr in arrays.items():
        layout[name] = (arr.dtype.str, len(arr), offset)
        offset += -(-arr.nbytes // 64) * 64
    blob = np.zeros(offset, np.uint8)
    for name, arr in arrays.items():
        _, n, off = layout[name]
        blob[off:off + arr.nbytes] = np.ascontiguousarray(arr).view(np.uint8)
    return blob, layout


def _unpack(blob: np.ndarray, layout: dict) -> dict:
    out = {}
    for name, (dtype, n, off) in layout.items():
        dt = np.dtype(dtype)
        out[name] = blob[off:off + n * dt.itemsize].view(dt)
    return out


def _write_cache(path: str, blob: np.ndarray, layout: dict, key: str) -> None:
    """``<path>``: one .npy file of bytes, the layout in a JSON header row written first.

    Atomic (atomic_open): readers and other processes see the whole file or none."""
    meta = json.dumps(dict(version=INDEX_VERSION, key=key, layout=layout)).encode()
    head = np.frombuffer(struct.pack('<Q', len(meta)) + meta, np.uint8)
    pad = -len(head) % 64
    full = np.concatenate([head, np.zeros(pad, np.uint8), blob])
    with atomic_open(path) as f:
        np.save(f, full)


def _remove_stale(folder: str, where: str, keep: str) -> None:
    """Remove the indexes of earlier versions of the image at the same realpath (a process
    still mapping one keeps its pages)."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(where + '-') and name.endswith('.npy') and path != keep:
            try:
                os.remove(path)
            except OSError:
                pass


def _read_cache(path: str, key: str) -> dict | None:
    full = np.load(path, mmap_mode='r')
    if full.dtype != np.uint8 or full.ndim != 1 or len(full) < 8:
        return None
    n = struct.unpack('<Q', bytes(full[:8]))[0]
    meta = json.loads(bytes(full[8:8 + n]))
    if meta.get('version') != INDEX_VERSION or meta.get('key') != key:
        return None
    start = 8 + n + (-(8 + n) % 64)
    arrays = _unpack(full[start:], meta['layout'])
    return arrays


# ------------------------------------------------------------------------------------ image

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

    # -- fork and pickle
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

    def __reduce__(self):
        return _unpickle, (self.path, self.cache_dir, self.identity)

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


def _unpickle(path: str, cache_dir: str | None, identity: tuple) -> SquashfsImage:
    image = open_image(path, cache_dir)
    if image.identity != tuple(identity):
        raise _changed(path)
    return image


_IMAGES: dict = {}
_IMAGES_LOCK = threading.Lock()
_REOPEN_LOCK = threading.Lock()


def _new_locks() -> None:
    """In a forked child: fresh locks (a thread of the parent may have held one)."""
    global _IMAGES_LOCK, _REOPEN_LOCK
    _IMAGES_LOCK, _REOPEN_LOCK = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_new_locks)


def open_image(image_path: str, cache_dir: str | None = None) -> SquashfsImage:
    """The image at ``image_path``, opened once per process (a dict by realpath). After a fork
    the same object keeps working. An image replaced, rewritten or removed after this process
    opened it raises :class:`ImageChangedError`: its files are never served from the new one
    (a run would otherwise mix two data sets without a word)."""
    real = os.path.realpath(image_path)
    with _IMAGES_LOCK:
        image = _IMAGES.get(real)
        if image is not None:
            try:
                st = os.stat(real)
            except OSError as e:
                raise _changed(image.path, f' (now: {e.strerror})') from e
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != image.identity:
                raise _changed(image.path)
            if cache_dir is None or cache_dir == image.cache_dir:
                return image
        image = SquashfsImage(image_path, cache_dir)
        _IMAGES[real] = image
        return image


# folder of an absolute path read through open_path -> (image file, its realpath, the image,
# inner folder): a later read in the same folder skips the walk of split_image_path and the
# realpath of open_image (11-13 stat calls) and stats the image file once instead
_FOLDERS: dict = {}
_FOLDERS_MAX = 4096


def open_path(path: str) -> tuple[SquashfsImage, str]:
    """(image, inner path) of a path that goes through an image file (``sqsh://`` or not): what
    :func:`split_image_path` and :func:`open_image` give, with the same errors. After the first
    read in a folder, one ``os.stat`` of the image file: an image replaced, rewritten or removed
    still raises :class:`ImageChangedError`, and one forgotten (:func:`forget_image`) or found
    through a symlink pointed elsewhere is looked up again. FileNotFoundError when no regular
    file is on the path."""
    folder, _, name = path.rpartition('/')
    hit = _FOLDERS.get(folder)
    if hit is not None and name not in ('', '.', '..'):
        image_path, real, image, inner = hit
        if _IMAGES.get(real) is image:  # else forgotten: look the path up again
            try:
                st = os.stat(image_path)
            except OSError as e:  # removed while in use, not a missing file of the data set
                raise _changed(image.path, f' (now: {e.strerror})') from e
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == image.identity:
                return image, (inner + '/' + name if inner else name)
    found = split_image_path(path)
    plain = path[len(SCHEME):] if path.startswith(SCHEME) else path
    if found is None:
        for image in list(_IMAGES.values()):  # an image this process opened, removed since
            if plain == image.path or plain.startswith(image.path.rstrip('/') + '/'):
                raise _changed(image.path, ' (now: no such file)')
        raise FileNotFoundError(f'{path}: no squashfs image on this path')
    image = open_image(found[0])
    inner = found[1]
    # only absolute paths (a relative one depends on the working folder) whose last component
    # is a name inside the image
    if (plain.startswith('/') and name not in ('', '.', '..')
            and (inner == name or inner.endswith('/' + name))):
        if len(_FOLDERS) >= _FOLDERS_MAX:
            _FOLDERS.clear()
        _FOLDERS[folder] = (found[0], os.path.realpath(found[0]), image,
                            inner[:-len(name)].rstrip('/'))
    return image, inner


def forget_image(image_path: str) -> None:
    """Drop this process's open image at ``image_path``: the next :func:`open_image` opens the
    file found there then (for a process that knowingly rebuilt the image)."""
    with _IMAGES_LOCK:
        _IMAGES.pop(os.path.realpath(image_path), None)
