"""Read files straight out of a squashfs 4.0 image: no unpacking, no root, no FUSE. The tree is
indexed once into flat arrays, cached on disk and memory-mapped by every process; every read is an
``os.pread``. Why this design, with measurements: docs/performance.md, "How the squashfs reader
works"."""
from . import image
from .cache import default_cache_dir
from .errors import ImageChangedError, SquashfsError
from .format import _BLOCK_UNCOMPRESSED  # noqa: F401 (tests check how a block is stored)
from .image import SquashfsImage
from .index import DIR, FILE, OTHER
from .paths import SCHEME, split_image_path
from .registry import forget_image, open_image, open_path

__all__ = ['DIR', 'FILE', 'OTHER', 'SCHEME', 'ImageChangedError', 'SquashfsError',
           'SquashfsImage', 'default_cache_dir', 'forget_image', 'open_image', 'open_path',
           'split_image_path']


def __getattr__(name: str):
    # build_count is read live from the module that bumps it (a copy here would stay 0)
    if name == 'build_count':
        return image.build_count
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
