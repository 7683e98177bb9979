"""Index of the course's LabeledDataset layout, independent of mmdet.

Layout: ``<root>/<split>/images/<id>.JPEG`` and ``<root>/<split>/labels/<id>.yml``, in a folder
or inside a squashfs image (``root`` a ``sqsh://`` path,
custom_modules/fileio/sqsh_backend.py); each yml holds ``bboxes`` ([xmin, ymin, xmax, ymax] absolute pixels), ``labels`` (class names, same
length) and optionally ``image_size`` ([width, height]). Width and height always come from the
image file's header (read without decoding pixels); ``image_size`` is only compared with it.

Problems that make a label ambiguous raise :class:`LabeledDataError` naming the file:
invalid YAML, missing keys, ``bboxes``/``labels`` length mismatch, a malformed box, an unknown
class name, a yml without its image or an image without its yml, an unreadable image header.
Problems with one well-defined fix are repaired, logged and counted in :class:`IndexReport`:
an ``image_size`` that differs from the header is replaced by the header's size (the boxes are
then checked against the real image), boxes partly outside the image are clipped to it, boxes
with no area (x2 <= x1 or y2 <= y1, as written or after clipping) are dropped, and images left
without objects are kept (``filter_cfg.filter_empty_gt=True`` drops them from a training set;
the training configs here set it False, as the seed trained on every image).

Reading 50,000 small yml files is the slow part of a 24-hour job's start, so parsing uses
libyaml when available, runs in worker processes, and the result is cached on disk under a
key built from every file's name, size and mtime, so any change to the folder re-indexes; inside
a squashfs image (no per-file mtimes) the key also holds a digest of every label file's bytes
and of the image's metadata tables.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import yaml
from mmengine import fileio

from ..fileio.sqsh_backend import (image_identity, is_sqsh_uri, metadata_digest, read_files,
                                   read_head)
from ..errors import UserError
from ..fileio.atomic_local import atomic_open
from ..fileio.sqsh_backend import scandir as sqsh_scandir
from .classes import LABELED_CLASSES

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml: correct, ~10x slower
    _Loader = yaml.SafeLoader

logger = logging.getLogger(__name__)

IMAGE_SUFFIX = '.JPEG'
LABEL_SUFFIX = '.yml'
_ID_RE = re.compile(r'^(\d+)$')
# bump when the cached record format or the repair rules change
_INDEX_VERSION = 2
# the first read of an image header inside a squashfs image, in whole blocks (grown x4 until
# the header is in it): a JPEG's SOF marker follows its tables and EXIF, usually in 1 KiB
_HEAD_BYTES = 4 << 10
# below this many files a process pool costs more than it saves
_PARALLEL_MIN_FILES = 2000

# kinds of repaired problems, as counted in IndexReport.problems
SIZE_MISMATCH = 'image_size in yml differs from the image header; header used'
CLIPPED = 'box clipped to image'
DEGENERATE = 'box with x2<=x1 or y2<=y1 dropped'
OUTSIDE = 'box outside image dropped'
NOT_IN_CLASSES = 'box of a class not in metainfo classes dropped'
EMPTY = 'image without objects'
# kinds of errors (LabeledDataError.kind)
BAD_YAML = 'invalid YAML or missing keys'
LENGTH_MISMATCH = 'bboxes/labels length mismatch'
BAD_BOX = 'malformed box'
UNKNOWN_CLASS = 'unknown class name'
UNPAIRED = 'image without yml or yml without image'
BAD_IMAGE = 'unreadable image'


class LabeledDataError(UserError):
    """A dataset file whose content cannot be turned into a label without guessing.

    ``kind`` names the problem (one of the error kinds above, BAD_YAML ... BAD_IMAGE) so
    reports can group them. A user's data to fix: the tools print it as one ``error:`` line.
    """

    def __init__(self, message: str, kind: str = 'error') -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Record:
    img_id: int
    img_path: str
    width: int
    height: int
    bboxes: np.ndarray  # (N, 4) float32 xyxy pixels
    labels: np.ndarray  # (N,) int64 indices into the class list used


@dataclass
class IndexReport:
    split_dir: str
    num_images: int = 0
    num_boxes: int = 0
    problems: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # problem kind -> first few file paths
    class_counts: Counter = field(default_factory=Counter)
    ignored_files: list = field(default_factory=list)
    from_cache: bool = False

    def add(self, kind: str, path: str, n: int = 1) -> None:
        self.problems[kind] += n
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < 5:
            self.examples[kind].append(path)

    def log(self, log: logging.Logger = logger) -> None:
        for kind, n in sorted(self.problems.items()):
            level = logging.INFO if kind == EMPTY else logging.WARNING
            log.log(level, '%s: %d x %s (e.g. %s)', self.split_dir, n, kind,
                    ', '.join(self.examples.get(kind, [])[:3]))
        if self.ignored_files:
            log.warning('%s: ignored %d files that are not <id>%s / <id>%s (e.g. %s)',
                        self.split_dir, len(self.ignored_files), IMAGE_SUFFIX, LABEL_SUFFIX,
                        ', '.join(self.ignored_files[:3]))


def _scandir(folder: str) -> list[tuple[str, bool, int, int]]:
    """(name, is a file, size, mtime_ns) of each entry of a folder or of a folder inside a
    squashfs image (whose files have no mtime of their own: the image's identity is in the
    cache key instead)."""
    if is_sqsh_uri(folder):
        try:
            entries = sqsh_scandir(folder)
        except FileNotFoundError as e:  # an entry that is no regular file: links are not followed
            raise LabeledDataError(f'{e}: repack the image with the file itself in its place',
                                   BAD_IMAGE) from e
        return [(name, is_file, size, 0) for name, is_file, size in entries]
    out = []
    with os.scandir(folder) as it:
        for entry in it:
            is_file = entry.is_file()
            st = entry.stat() if is_file else None
            out.append((entry.name, is_file, st.st_size if st else 0, st.st_mtime_ns if st else 0))
    return out


def _join(folder: str, *names: str) -> str:
    return '/'.join([folder.rstrip('/'), *names]) if is_sqsh_uri(folder) else \
        os.path.join(folder, *names)


def _isdir(path: str) -> bool:
    return fileio.isdir(path) if is_sqsh_uri(path) else os.path.isdir(path)


def _open(path: str):
    return io.BytesIO(fileio.get(path)) if is_sqsh_uri(path) else open(path, 'rb')


def _list_ids(folder: str, suffix: str, ignored: list) -> tuple[dict[int, str], list]:
    """Map id -> file name for ``<id><suffix>`` files."""
    ids, stats = {}, []
    for name, is_file, size, mtime_ns in _scandir(folder):
        stem, ext = os.path.splitext(name)
        if ext != suffix or not _ID_RE.match(stem) or not is_file:
            ignored.append(_join(folder, name))
            continue
        ids[int(stem)] = name
        stats.append((name, size, mtime_ns))
    return ids, stats


def _describe_unpaired(kind: str, paths: list) -> str:
    shown = ', '.join(paths[:5]) + (f' ... ({len(paths)} in all)' if len(paths) > 5 else '')
    return f'{kind}: {shown}'


def read_image_size(path: str) -> tuple[int, int]:
    """(width, height) of the stored pixels, from the image header, without decoding pixels."""
    return read_image_header(path)[:2]


def read_image_header(path: str) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) of the stored pixels, from the image header, without
    decoding pixels; orientation 1 (as stored) when the file has none or an invalid one."""
    from PIL import Image
    head = _HEAD_BYTES
    while True:
        whole = True
        try:
            if is_sqsh_uri(path):  # not the whole file: the blocks that hold its first bytes
                data = read_head(path, head)
                whole = len(data) < head  # else the file may go on: read more if need be
                head = 4 * len(data)
                f = io.BytesIO(data)
            else:
                f = open(path, 'rb')
            with f, Image.open(f) as img:
                # the base class's getexif: PNG's own decodes the pixels to find a late eXIf
                orientation = Image.Image.getexif(img).get(0x0112, 1)
                return img.size + (orientation if orientation in range(1, 9) else 1,)
        except Exception as e:  # PIL raises several types for a bad or cut-off header
            if not whole:
                continue
            raise LabeledDataError(f'{path}: cannot read image header ({e})', BAD_IMAGE) from e


def parse_label_file(path: str, class_to_idx: dict[str, int]) -> tuple:
    """Return (image_size or None, boxes list, label indices) or raise LabeledDataError."""
    try:
        with _open(path) as f:
            doc = yaml.load(f, Loader=_Loader)
    except yaml.YAMLError as e:
        raise LabeledDataError(f'{path}: invalid YAML ({e})'.replace('\n', ' '), BAD_YAML) from e
    if not isinstance(doc, dict) or 'bboxes' not in doc or 'labels' not in doc:
        raise LabeledDataError(f'{path}: expected a mapping with keys "bboxes" and "labels"',
                               BAD_YAML)
    boxes, names = doc['bboxes'] or [], doc['labels'] or []
    if not isinstance(boxes, list) or not isinstance(names, list):
        raise LabeledDataError(f'{path}: "bboxes" and "labels" must be lists', BAD_YAML)
    if len(boxes) != len(names):
        raise LabeledDataError(f'{path}: {len(boxes)} bboxes but {len(names)} labels',
                               LENGTH_MISMATCH)
    for box in boxes:
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in box)):
            raise LabeledDataError(f'{path}: malformed box {box!r}, expected '
                                   '[xmin, ymin, xmax, ymax]', BAD_BOX)
    labels = []
    for name in names:
        if name not in class_to_idx:
            raise LabeledDataError(f'{path}: unknown class name {name!r} (not one of the '
                                   f'{len(LABELED_CLASSES)} classes of the dataset table)',
                                   UNKNOWN_CLASS)
        labels.append(class_to_idx[name])
    size = doc.get('image_size')
    if size is not None:
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(v, int) and v > 0 for v in size)):
            raise LabeledDataError(f'{path}: malformed image_size {size!r}, '
                                   'expected [width, height]', BAD_YAML)
        size = (size[0], size[1])
    return size, boxes, labels


def _parse_chunk(args) -> list:
    """[((img_id, img_path, label_path, header size, boxes, labels), yml image_size or None)]."""
    items, class_to_idx = args
    out = []
    for img_id, img_path, label_path in items:
        yml_size, boxes, labels = parse_label_file(label_path, class_to_idx)
        size = read_image_size(img_path)
        out.append(((img_id, img_path, label_path, size, boxes, labels), yml_size))
    return out


def _sanitize(parsed, keep: Sequence[int | None], report: IndexReport) -> Record:
    img_id, img_path, label_path, (w, h), boxes, labels = parsed
    kept_boxes, kept_labels = [], []
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        if keep[label] is None:
            report.add(NOT_IN_CLASSES, label_path)
            continue
        if x2 <= x1 or y2 <= y1:
            report.add(DEGENERATE, label_path)
            continue
        cx1, cy1 = min(max(x1, 0), w), min(max(y1, 0), h)
        cx2, cy2 = min(max(x2, 0), w), min(max(y2, 0), h)
        if cx2 <= cx1 or cy2 <= cy1:
            report.add(OUTSIDE, label_path)
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            report.add(CLIPPED, label_path)
        kept_boxes.append((cx1, cy1, cx2, cy2))
        kept_labels.append(keep[label])
        report.class_counts[LABELED_CLASSES[label]] += 1
    if not kept_boxes:
        report.add(EMPTY, label_path)
    report.num_boxes += len(kept_boxes)
    return Record(img_id, img_path, int(w), int(h),
                  np.asarray(kept_boxes, dtype=np.float32).reshape(-1, 4),
                  np.asarray(kept_labels, dtype=np.int64))


def default_cache_dir() -> str:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'labeled-det-index')


@dataclass
class SplitFiles:
    split_dir: str
    img_ids: dict  # id -> image path
    label_ids: dict  # id -> yml path
    stats: tuple  # (name, size, mtime_ns) of every image and yml: the cache key
    ignored: list

    def unpaired(self) -> tuple[list, list]:
        """(yml files without an image, images without a yml file)."""
        return ([self.label_ids[i] for i in sorted(set(self.label_ids) - set(self.img_ids))],
                [self.img_ids[i] for i in sorted(set(self.img_ids) - set(self.label_ids))])


def scan_split(root: str, split: str) -> SplitFiles:
    """Find ``<id>.JPEG`` / ``<id>.yml`` files by listing the folders (ids need not be contiguous)."""
    split_dir = _join(root, split)
    img_dir, label_dir = _join(split_dir, 'images'), _join(split_dir, 'labels')
    for d in (split_dir, img_dir, label_dir):
        if not _isdir(d):
            raise FileNotFoundError(f'{d}: folder does not exist (expected '
                                    f'<root>/<split>/images/<id>{IMAGE_SUFFIX} and '
                                    f'<root>/<split>/labels/<id>{LABEL_SUFFIX})')
    ignored = []
    img_ids, img_stats = _list_ids(img_dir, IMAGE_SUFFIX, ignored)
    label_ids, label_stats = _list_ids(label_dir, LABEL_SUFFIX, ignored)
    image = (image_identity(root),) if is_sqsh_uri(root) else ()
    return SplitFiles(split_dir,
                      {i: _join(img_dir, n) for i, n in img_ids.items()},
                      {i: _join(label_dir, n) for i, n in label_ids.items()},
                      (tuple(sorted(img_stats)), tuple(sorted(label_stats))) + image, ignored)


def _image_content(root: str, files: SplitFiles) -> tuple:
    """What identifies the labels inside a squashfs image, whose files have no mtime (0 when
    packed with -all-time 0) and whose size and superblock can stay the same after a same-size
    edit: a digest of every label file's bytes and of the image's metadata tables (the images'
    names, sizes and layout)."""
    h = hashlib.sha256()
    ids = sorted(files.label_ids)
    for i, data in zip(ids, read_files(files.label_ids[i] for i in ids)):
        h.update(b'%d %d\n' % (i, len(data)))
        h.update(data)
    return h.hexdigest(), metadata_digest(root)


def load_split(root: str, split: str, classes: Iterable[str] = LABELED_CLASSES,
               cache_dir: str | None = None, use_cache: bool = True,
               num_workers: int | None = None) -> tuple[list[Record], IndexReport]:
    """Index ``root/split``; labels index into ``classes`` (a subset of the 100-class table)."""
    classes = tuple(classes)
    unknown = [c for c in classes if c not in LABELED_CLASSES]
    if unknown:
        raise ValueError(f'metainfo classes {unknown} are not in the dataset table')
    # cached records are shared by every working directory, so their paths must not be relative
    files = scan_split(root if is_sqsh_uri(root) else os.path.abspath(root), split)
    split_dir = files.split_dir
    report = IndexReport(split_dir=split_dir, ignored_files=files.ignored)
    no_image, no_label = files.unpaired()
    if no_image or no_label:
        msgs = []
        if no_image:
            msgs.append(_describe_unpaired('label files without an image', no_image))
        if no_label:
            msgs.append(_describe_unpaired('images without a label file', no_label))
        raise LabeledDataError(f'{split_dir}: ' + '; '.join(msgs), UNPAIRED)

    content = _image_content(root, files) if is_sqsh_uri(root) else ()
    key = hashlib.sha1(pickle.dumps((
        _INDEX_VERSION, split_dir, classes, files.stats, content))).hexdigest()
    cache_path = os.path.join(cache_dir or default_cache_dir(), f'{key}.pkl')
    if use_cache and os.path.isfile(cache_path):
        try:
            with open(cache_path, 'rb') as f:
                records, report = pickle.load(f)
            report.from_cache = True
            return records, report
        except Exception as e:  # a stale or damaged cache is rebuilt, never trusted
            logger.warning('ignoring unreadable index cache %s (%s)', cache_path, e)

    # the full table, so an unknown name is always an error; `keep` maps to `classes`
    class_to_idx = {c: i for i, c in enumerate(LABELED_CLASSES)}
    keep = [classes.index(c) if c in classes else None for c in LABELED_CLASSES]
    items = [(i, files.img_ids[i], files.label_ids[i]) for i in sorted(files.img_ids)]
    if is_sqsh_uri(root):
        # in name order, the order mksquashfs stores files in: the small files packed together
        # in one fragment block are then read one after another, and the block is decompressed
        # once (in id order, 1, 2, ... against 1, 10, 100, ..., nearly once per file)
        items.sort(key=lambda item: item[1])
    workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
    if workers > 1 and len(items) >= _PARALLEL_MIN_FILES:
        step = max(256, len(items) // (workers * 8))
        chunks = [(items[i:i + step], class_to_idx) for i in range(0, len(items), step)]
        with ProcessPoolExecutor(workers) as pool:
            parsed = [p for chunk in pool.map(_parse_chunk, chunks) for p in chunk]
    else:
        parsed = _parse_chunk((items, class_to_idx))
    parsed.sort(key=lambda p: p[0][0])  # records in id order
    records = []
    for p, yml_size in parsed:
        if yml_size is not None and tuple(yml_size) != tuple(p[3]):
            report.add(SIZE_MISMATCH, p[2])
        records.append(_sanitize(p, keep, report))
    report.num_images = len(records)

    if use_cache:
        try:
            with atomic_open(cache_path) as f:  # readers never see a partial cache
                pickle.dump((records, report), f, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError as e:  # a read-only home must not stop training
            logger.warning('could not write index cache %s (%s)', cache_path, e)
    return records, report
