"""Datasets read straight out of a squashfs image (``unlabeled_224.sqsh``, ``labeled.sqsh``).

A data root that goes through an image file, ``/data/unlabeled_224.sqsh`` or
``/data/unlabeled_224.sqsh/unlabeled``, becomes the URI ``sqsh:///data/unlabeled_224.sqsh/unlabeled``
(:func:`resolve_data_root`). mmengine picks a storage backend by the part of a path before
``://``, so the ``sqsh`` backend registered here serves every read of such a path: the
datasets' folder scans (``list_dir_or_file``, ``isdir``) and mmcv's ``LoadImageFromFile``
(``fileio.get``). The loading transforms and the configs stay upstream's and ours as they are;
only the data root changes. The image format itself is read by :mod:`custom_modules.squashfs`.
"""
from __future__ import annotations

import hashlib
import os
import os.path as osp
import struct
from typing import Iterator

from mmengine.fileio.backends import BaseStorageBackend, register_backend

from ..errors import UserError
from .squashfs import SCHEME, SquashfsError, open_image, open_path, split_image_path


def is_sqsh_uri(path) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


def _parse(uri: str):
    """(image, inner path) of a ``sqsh://`` URI; after the first read in a folder, one
    ``os.stat`` of the image file (:func:`open_path`)."""
    return open_path(uri)


def _inner(inner: str, *more: str) -> str:
    return '/'.join(p.strip('/') for p in (inner, *more) if p.strip('/'))


def resolve_data_root(path: str, flag: str = '--data-root') -> str:
    """``path`` as the datasets read it: a folder as it is, a path through a squashfs image as
    a validated ``sqsh://`` URI. Raises UserError (one line, naming the file) for a missing
    folder, a file that is no readable squashfs image, a path that is not a folder inside the
    image, and an image without any file."""
    if is_sqsh_uri(path) or not osp.isdir(path):
        found = split_image_path(path)
        if found is None:
            raise UserError(f'{flag} {path}: folder does not exist')
        image_path, inner = found
        try:
            image = open_image(image_path)
        except SquashfsError as e:
            why = str(e)  # it names the image, which the path given names too
            why = why[len(image_path) + 2:] if why.startswith(image_path + ': ') else why
            raise UserError(f'{flag} {path}: {why}') from e
        if not image.isdir(inner):
            what = 'a file' if image.isfile(inner) else 'not in the image'
            raise UserError(f'{flag} {path}: {inner!r} is {what}; give the image itself or a '
                            f'folder inside it (it has: {_top_level(image)})')
        if not image.files(inner):
            raise UserError(f'{flag} {path}: the squashfs image {image_path} has no file'
                            + (f' under {inner!r}' if inner else ''))
        return SCHEME + osp.abspath(image_path) + ('/' + inner if inner else '')
    return path


def _top_level(image) -> str:
    names = [n + ('/' if d else '') for n, d in image.listdir('')[:8]]
    return ', '.join(names) or 'nothing'


def image_identity(uri: str) -> str:
    """What identifies the image a ``sqsh://`` path reads: its size and a digest of its
    superblock (creation time, table positions, counts), so a resumed run notices another or
    rebuilt image even at the same path, and a copy of the same image is still the same."""
    found = split_image_path(uri)  # the file on disk now, not the one this process has open
    if found is None:
        raise FileNotFoundError(f'{uri}: no squashfs image on this path')
    with open(found[0], 'rb') as f:
        head = f.read(96)
        size = os.fstat(f.fileno()).st_size
    return f'{size} bytes, superblock sha256 ' \
           f'{hashlib.sha256(head).hexdigest()[:16]}'


def metadata_digest(uri: str) -> str:
    """SHA-256 of the image's metadata tables (inodes, folders, fragment, id and export tables:
    every file's name, size and block layout), read from the file on disk. A cache keyed on it
    sees a repacked image whose superblock and size came out the same."""
    found = split_image_path(uri)
    if found is None:
        raise FileNotFoundError(f'{uri}: no squashfs image on this path')
    h = hashlib.sha256()
    with open(found[0], 'rb') as f:
        head = f.read(96)
        bytes_used, = struct.unpack_from('<Q', head, 40)
        start, = struct.unpack_from('<Q', head, 64)
        f.seek(start)
        left = max(bytes_used - start, 0)
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def read_files(uris) -> Iterator[bytes]:
    """The bytes of each ``sqsh://`` path, in order, looking each folder's image up once (a read
    through the backend stats the image file each time)."""
    folders = {}
    for uri in uris:
        folder, _, name = str(uri).rpartition('/')
        found = folders.get(folder)
        if found is None:
            found = folders[folder] = _parse(folder)
        image, inner = found
        yield image.read(_inner(inner, name))


def read_head(uri: str, size: int) -> bytes:
    """The start of the file at a ``sqsh://`` path: at least its first ``size`` bytes (the
    whole blocks that hold them), or all of it; the rest is not read."""
    image, inner = _parse(uri)
    return image.read_head(inner, size)


def scandir(uri: str) -> list[tuple[str, bool, int]]:
    """(name, is a file, size) of each entry of a folder inside an image."""
    image, inner = _parse(uri)
    return [(name, not is_dir, 0 if is_dir else image.size(_inner(inner, name)))
            for name, is_dir in image.listdir(inner)]


class SquashfsBackend(BaseStorageBackend):
    """Read-only mmengine storage backend for ``sqsh://<image path>/<path inside>``.

    Holds nothing but the per-process table of open images in custom_modules.squashfs, which
    reads with positional reads: loader workers forked from a process that already read are
    correct, and spawned ones open the image again (its index comes from the on-disk cache).
    """

    def get(self, filepath) -> bytes:
        image, inner = _parse(str(filepath))
        return image.read(inner)

    def get_text(self, filepath, encoding: str = 'utf-8') -> str:
        return self.get(filepath).decode(encoding)

    @staticmethod
    def _ask(filepath, question: str) -> bool:
        try:
            image, inner = _parse(str(filepath))
        except FileNotFoundError:  # no image on the path
            return False
        return getattr(image, question)(inner)

    def exists(self, filepath) -> bool:
        return self._ask(filepath, 'exists')

    def isdir(self, filepath) -> bool:
        return self._ask(filepath, 'isdir')

    def isfile(self, filepath) -> bool:
        return self._ask(filepath, 'isfile')

    def join_path(self, filepath, *filepaths) -> str:
        return '/'.join([str(filepath).rstrip('/')]
                        + [str(p).strip('/') for p in filepaths if str(p).strip('/')])

    def list_dir_or_file(self, dir_path, list_dir: bool = True, list_file: bool = True,
                         suffix=None, recursive: bool = False) -> Iterator[str]:
        """Paths relative to ``dir_path``, as mmengine's LocalBackend gives them (files whose
        name starts with '.' left out). The datasets list with custom_modules/fileio/listing.py,
        which also skips hidden folders."""
        if list_dir and suffix is not None:
            raise TypeError('`suffix` should be None when `list_dir` is True')
        image, inner = _parse(str(dir_path))
        if not image.isdir(inner):
            raise FileNotFoundError(f'{dir_path}: not a folder in the image')

        def wanted(name: str) -> bool:
            # LocalBackend's rule, so a folder and its image list alike: hidden files skipped
            return not name.startswith('.') and (suffix is None or name.endswith(suffix))

        if not recursive:
            for name, is_dir in image.listdir(inner):
                if (is_dir and list_dir) or (not is_dir and list_file and wanted(name)):
                    yield name
            return
        start = len(inner) + 1 if inner else 0
        if list_dir:
            stack = [inner]
            while stack:
                here = stack.pop()
                for name, is_dir in image.listdir(here):
                    path = _inner(here, name)
                    if is_dir:
                        yield path[start:]
                        stack.append(path)
                    elif list_file and wanted(name):
                        yield path[start:]
        elif list_file:
            for path in image.files(inner):
                if wanted(path.rsplit('/', 1)[-1]):
                    yield path[start:]


register_backend('sqsh', SquashfsBackend, prefixes='sqsh')
