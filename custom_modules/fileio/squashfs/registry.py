"""The images this process has open, one object per image file (open_image), and the lookup of a
path's image and inner path (open_path); a pickled image reopens through here."""
from __future__ import annotations

import copyreg
import os
import threading

from .errors import _changed
from .image import SquashfsImage
from .paths import SCHEME, split_image_path


def _unpickle(path: str, cache_dir: str | None, identity: tuple) -> SquashfsImage:
    image = open_image(path, cache_dir)
    if image.identity != tuple(identity):
        raise _changed(path)
    return image


# an image pickles to (path, cache folder, identity), and unpickles through open_image: a
# spawned loader worker reopens the file and maps the cached index. Registered here rather than
# as SquashfsImage.__reduce__: open_image lives here, and the image module does not import this.
def _reduce(image: SquashfsImage) -> tuple:
    return _unpickle, (image.path, image.cache_dir, image.identity)


copyreg.pickle(SquashfsImage, _reduce)

_IMAGES: dict = {}
_IMAGES_LOCK = threading.Lock()


def _new_lock() -> None:
    """In a forked child: a fresh lock (a thread of the parent may have held it)."""
    global _IMAGES_LOCK
    _IMAGES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_lock)


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
