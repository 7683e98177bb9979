"""Build the index of an image: its inode and directory tables decoded into flat numpy arrays,
the whole tree at once (a Python object per entry costs too much at 512k entries)."""
from __future__ import annotations

import os
import struct
from array import array

import numpy as np

from .errors import SquashfsError
from .format import _METADATA_SIZE, _NO_FRAGMENT, _NO_TABLE, _u

# entry kinds in the index
DIR, FILE, OTHER = 1, 2, 3


class _Builder:
    """Decode the inode and directory tables of an image into flat arrays."""

    def __init__(self, img, fd: int, sb: dict) -> None:
        """``img``: the SquashfsImage being opened (its path and decompressor)."""
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
