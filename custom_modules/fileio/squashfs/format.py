"""The squashfs 4.0 on-disk format: superblock layout, constants, decompressors and the field
reader the index builder uses."""
from __future__ import annotations

import lzma
import struct
import zlib

import numpy as np

from .errors import SquashfsError

MAGIC = 0x73717368  # 'hsqs'
_SUPERBLOCK = struct.Struct('<IIIIIHHHHHHQQQQQQQQ')  # 96 bytes
_NO_FRAGMENT = 0xFFFFFFFF
_NO_TABLE = 0xFFFFFFFFFFFFFFFF
_METADATA_SIZE = 8192
_BLOCK_UNCOMPRESSED = 1 << 24
_FLAG_NO_FRAGMENTS = 0x10
_FLAG_EXPORTABLE = 0x80
_FLAG_COMPRESSOR_OPTIONS = 0x400

REPACK = ('repack it with gzip: unsquashfs -d unpacked {image} && '
          'mksquashfs unpacked new.sqsh -comp gzip')

# id: (name, PyPI package or None for the standard library)
COMPRESSIONS = {
    1: ('gzip', None),
    2: ('lzma', None),
    3: ('lzo', 'lzallright'),
    4: ('xz', None),
    5: ('lz4', 'lz4'),
    6: ('zstd', 'zstandard'),
}


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


def _u(buf: np.ndarray, pos: np.ndarray, nbytes: int) -> np.ndarray:
    """Little-endian unsigned ints of ``nbytes`` at byte positions ``pos`` of uint8 ``buf``."""
    if len(pos) == 0:
        return np.zeros(0, np.uint64)
    if int(pos.max()) + nbytes > len(buf) or int(pos.min()) < 0:
        raise IndexError('field outside its table')
    rows = np.lib.stride_tricks.as_strided(buf, (len(buf) - nbytes + 1, nbytes), (1, 1))
    return np.ascontiguousarray(rows[pos]).view(f'<u{nbytes}').ravel()
