"""The index cache on disk: the built arrays packed into one .npy file that every later open,
loader worker and rank memory-maps instead of building the index again."""
from __future__ import annotations

import json
import os
import struct

import numpy as np

from ..atomic_local import atomic_open

# bump when the cached index format changes: old caches are then never read
INDEX_VERSION = 1


def default_cache_dir() -> str:
    """``<XDG_CACHE_HOME or ~/.cache>/sqsh-index``, beside the labeled index's cache."""
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'sqsh-index')


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
