"""Paths that go through a squashfs image file: where the image file ends and the inner path
begins."""
from __future__ import annotations

import os
import stat

SCHEME = 'sqsh://'


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
