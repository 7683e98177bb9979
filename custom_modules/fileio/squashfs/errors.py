"""The errors of the squashfs reader: an image that cannot be read, or one that changed on disk
while in use."""
from __future__ import annotations

from ...errors import UserError


class SquashfsError(UserError):
    """An image that cannot be read: not squashfs, truncated, damaged, or an unsupported
    compression. The message always names the image file."""


class ImageChangedError(SquashfsError):
    """The image file was replaced, rewritten or removed while this process read it. Never a
    reason to read the new file instead: the index and every read so far came from the old one."""


def _changed(path: str, how: str = '') -> ImageChangedError:
    return ImageChangedError(f'{path}: the squashfs image changed on disk while it was in use'
                             f'{how}; a run reads one image from start to end: restart it')
