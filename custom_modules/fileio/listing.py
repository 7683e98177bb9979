"""One listing of a data tree, the same rules whether it is a folder or a folder inside a
squashfs image, so a tree lists the same files in the same order however it is stored.

- Names starting with '.' are skipped, files and folders alike (macOS ``._a.PNG`` resource
  forks, ``.DS_Store``, ``.ipynb_checkpoints/``), and returned so the caller can count them.
- A symlink is followed in a folder, to a file or a folder (a link back to a folder above it is
  not walked again). Inside an image a link holds only its target's text, which the reader does
  not follow: it is returned in ``other``, as are a dangling link in a folder and special files
  (devices, FIFOs, sockets), for the caller to refuse by name.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from mmengine.logging import print_log

from ..errors import UserError
from .squashfs import DIR, FILE, OTHER, SCHEME, open_image, split_image_path


@dataclass
class TreeListing:
    files: list = field(default_factory=list)  # '/'-separated paths relative to the root, sorted
    hidden: list = field(default_factory=list)  # hidden files and folders skipped
    other: list = field(default_factory=list)  # (path, what it is): links in an image, ...


def list_tree(root: str) -> TreeListing:
    """Every file under ``root`` (a folder, or a ``sqsh://`` path of a folder in an image)."""
    out = TreeListing()
    if root.startswith(SCHEME):
        found = split_image_path(root)
        if found is None:
            raise FileNotFoundError(f'{root}: no squashfs image on this path')
        _walk_image(open_image(found[0]), found[1], '', out)
    else:
        _walk_folder(root, '', out, {_key(root)})
    out.files.sort()
    out.hidden.sort()
    out.other.sort()
    return out


def list_data_files(root: str) -> list:
    """:func:`list_tree`'s files for a dataset to read: links inside an image and special files
    refused with one line naming the first, the hidden names skipped logged with a count."""
    listing = list_tree(root)
    if listing.other:
        path, what = listing.other[0]
        raise UserError(f'{root}: {path!r} is {what} ({len(listing.other)} in all); put the '
                        'file itself in its place')
    if listing.hidden:
        print_log(f'{root}: skipped {len(listing.hidden)} hidden files and folders (names '
                  f'starting with "."), e.g. ' + ', '.join(repr(p) for p in listing.hidden[:3]),
                  logger='current', level=logging.INFO)
    return listing.files


def folder_entries(folder: str) -> list[tuple[str, int]]:
    """(name, DIR, FILE or OTHER) of each entry of one folder, links followed in a folder as
    :func:`list_tree` follows them; hidden names included (the caller skips them)."""
    if folder.startswith(SCHEME):
        found = split_image_path(folder)
        if found is None:
            raise FileNotFoundError(f'{folder}: no squashfs image on this path')
        return open_image(found[0]).entries(found[1])
    with os.scandir(folder) as it:
        return [(e.name, DIR if e.is_dir() else FILE if e.is_file() else OTHER) for e in it]


def _walk_image(image, inner: str, rel: str, out: TreeListing) -> None:
    for name, kind in image.entries(inner):
        path = rel + name
        if name.startswith('.'):
            out.hidden.append(path)
        elif kind == DIR:
            _walk_image(image, inner + '/' + name if inner else name, path + '/', out)
        elif kind == FILE:
            out.files.append(path)
        else:
            out.other.append((path, 'a symlink or special file (links inside a squashfs image '
                                    'are not followed)'))


def _key(path: str):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _walk_folder(folder: str, rel: str, out: TreeListing, seen: set) -> None:
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = rel + entry.name
        if entry.name.startswith('.'):
            out.hidden.append(path)
        elif entry.is_dir():  # follows a link, as is_file below
            key = _key(entry.path)
            if key not in seen:  # a link back to a folder above: listed once
                _walk_folder(entry.path, path + '/', out, seen | {key})
        elif entry.is_file():
            out.files.append(path)
        else:
            what = 'a link to nothing' if entry.is_symlink() else 'a special file'
            out.other.append((path, what))
