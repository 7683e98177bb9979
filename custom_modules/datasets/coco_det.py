"""COCO-format detection data: mmdet's CocoDataset with the class list taken from the file.

Layout recognised by ``--data-root DIR`` (tools/dataset_converters/course_to_coco.py writes it):
``DIR/annotations/instances_<split>.json`` with each image at ``DIR/<split>/<file_name>``; any
other layout through ``ann_file`` and ``data_prefix=dict(img=...)``.

:func:`read_coco` reads and checks a file once per process (the tools call it before building
the runner, so bad input stops with one line naming the file and the entry; the dataset reuses
the parsed file). Classes: the names of ``categories`` in the file's order, any ids, label k
is the k-th category; a config's ``metainfo=dict(classes=...)`` may name a subset.

EXIF orientation: the boxes are in the frame the JSON's ``width``/``height`` describe, decided
per image when its header is read (:func:`coco_frame`) and carried to the loader in the data
info (``APPLY_EXIF``), so training, testing and browsing decode each image in the same frame.
"""
from __future__ import annotations

import json
import logging
import math
import os
import os.path as osp
from collections import Counter
from dataclasses import dataclass

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine import fileio
from mmengine.logging import MMLogger

from .labeled_index import read_image_header
from .samplers import SeededSamplesMixin
from .classes import palette

ANN_FILE = 'annotations/instances_{split}.json'
# what the dataset repairs or leaves out, as its log counts them
SIZE_DIFFERS = "width/height differs from the image file; the file's size used"
ZERO_AREA = "area 0 or less; the box's area used"
OUTSIDE = 'box outside the image dropped'
TINY = 'box under 1 pixel wide or high dropped'
IGNORED = 'box with "ignore" set left out'
OTHER_CLASS = 'box of a category not in metainfo classes left out'
ORIENTED = ("EXIF orientation applied (the JSON's width/height are the displayed image's, "
            'or cannot tell)')
STORED = ("EXIF orientation not applied (the JSON's width/height are the stored pixels', "
          'not the displayed image\'s)')
# data-info key LoadImageNamed reads: whether to apply this image's EXIF orientation
APPLY_EXIF = 'apply_exif_orientation'
# EXIF orientations that swap width and height (a quarter turn)
_QUARTER_TURNS = (5, 6, 7, 8)


class CocoDataError(ValueError):
    pass


@dataclass
class CocoFile:
    path: str
    data: dict  # the parsed JSON, 'area' filled in where it was absent
    classes: tuple
    cat_ids: tuple  # category id of each class, same order
    no_boxes: int  # images without any annotation


# (path, size, mtime) -> CocoFile: the tools' check and the dataset share one parse, which the
# dataset drops once indexed (forked loader workers would each copy the parsed JSON's pages)
_read = {}


def coco_ann_file(root: str, split: str) -> str:
    return osp.join(root, ANN_FILE.format(split=split))


def is_coco_root(root: str) -> bool:
    """Whether ``root`` (a folder, or a ``sqsh://`` path inside a squashfs image) holds
    ``annotations/instances_<split>.json``."""
    return fileio.isdir(osp.join(root, 'annotations')) and bool(coco_splits(root))


def coco_splits(root: str) -> list:
    names = fileio.list_dir_or_file(osp.join(root, 'annotations'), list_dir=False)
    return sorted(n[len('instances_'):-len('.json')] for n in names
                  if n.startswith('instances_') and n.endswith('.json'))


def load_json(path: str) -> dict:
    """The annotation file as a dict with the three lists, or CocoDataError."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except OSError as e:
        raise CocoDataError(f'{path}: cannot read the annotation file ({e.strerror})') from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoDataError(f'{path}: not valid JSON ({e})') from e
    if not isinstance(data, dict):
        raise CocoDataError(f'{path}: expected a JSON object with "images", "annotations", '
                            f'"categories", got {type(data).__name__}')
    for k in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(k), list):
            raise CocoDataError(f'{path}: no "{k}" list')
    return data


# kinds of problems (the first word of each message after the file name)
MISSING_KEY, DUPLICATE, UNKNOWN_IMAGE, UNKNOWN_CATEGORY, BAD_BOX, BAD_VALUE = (
    'missing key', 'duplicate id or name', 'annotation on an unknown image id',
    'unknown category id', 'malformed bbox', 'value of the wrong type')
# width and height may be absent: the image file's header gives them
_REQUIRED = (('categories', ('id', 'name')), ('images', ('id', 'file_name')),
             ('annotations', ('id', 'image_id', 'category_id', 'bbox')))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def structure_problems(path: str, data: dict) -> list:
    """Every (kind, message) that makes the data ambiguous, each message naming the file and
    the entry: a missing key, duplicate image / category / annotation ids or category names, an
    annotation on an image id or of a category id that does not exist, a bbox that is not 4
    numbers, a value of a type mmdet would crash on or misread (a width or height that is no
    positive number, a file_name that is no string, an area that is no number, an iscrowd
    other than 0 or 1)."""
    problems, valid = [], {}
    for section, keys in _REQUIRED:
        valid[section] = []
        for i, e in enumerate(data[section]):
            lacking = [k for k in keys if not isinstance(e, dict) or k not in e]
            if lacking:
                ident = f' (id {e["id"]})' if isinstance(e, dict) and 'id' in e else ''
                problems.append((MISSING_KEY, f'{path}: {section}[{i}]{ident} has no '
                                 f'"{lacking[0]}"'))
            else:
                valid[section].append((i, e))
    for section, what in (('categories', 'id'), ('categories', 'name'), ('images', 'id'),
                          ('annotations', 'id')):
        first = {}
        for i, e in valid[section]:
            v = e[what]
            if v in first:
                problems.append((DUPLICATE, f'{path}: {section}[{i}]: {what} {v!r} also in '
                                 f'{section}[{first[v]}]'))
            else:
                first[v] = i
    for i, im in valid['images']:
        where = f'{path}: images[{i}] (id {im["id"]})'
        for k in ('width', 'height'):
            if k in im and not (_number(im[k]) and im[k] > 0):
                problems.append((BAD_VALUE, f'{where}: {k} {im[k]!r} is not a positive number'))
        if not isinstance(im['file_name'], str):
            problems.append((BAD_VALUE, f'{where}: file_name {im["file_name"]!r} is not a '
                             'string'))
    for i, a in valid['annotations']:
        where = f'{path}: annotations[{i}] (id {a["id"]})'
        if 'area' in a and not _number(a['area']):
            problems.append((BAD_VALUE, f'{where}: area {a["area"]!r} is not a number'))
        if 'iscrowd' in a and a['iscrowd'] not in (0, 1):
            problems.append((BAD_VALUE, f'{where}: iscrowd {a["iscrowd"]!r} is not 0 or 1'))
    image_ids = {e['id'] for _, e in valid['images']}
    cat_ids = {e['id'] for _, e in valid['categories']}
    for i, a in valid['annotations']:
        where = f'{path}: annotations[{i}] (id {a["id"]})'
        if a['image_id'] not in image_ids:
            problems.append((UNKNOWN_IMAGE, f'{where}: image_id {a["image_id"]} is not in '
                             '"images"'))
        if a['category_id'] not in cat_ids:
            problems.append((UNKNOWN_CATEGORY, f'{where}: category_id {a["category_id"]} is not '
                             'in "categories"'))
        box = a['bbox']
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
            problems.append((BAD_BOX, f'{where}: bbox {box!r} is not [x, y, width, height]'))
    return problems


def read_coco(path: str) -> CocoFile:
    """Parse and check ``path`` (once per process and file version). Raises CocoDataError with
    the first problem of :func:`structure_problems` (tools/check_dataset.py lists them all)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise CocoDataError(f'{path}: cannot read the annotation file ({e.strerror})') from e
    key = (osp.abspath(path), st.st_size, st.st_mtime_ns)
    if key in _read:
        return _read[key]
    data = load_json(path)
    problems = structure_problems(path, data)
    if problems:
        more = (f' ({len(problems) - 1} more problems: tools/check_dataset.py lists them)'
                if len(problems) > 1 else '')
        raise CocoDataError(problems[0][1] + more)
    for a in data['annotations']:
        # many exporters leave out "area"; mmdet's reader needs it (the box area, as COCO's)
        a.setdefault('area', a['bbox'][2] * a['bbox'][3])
    cats, images = data['categories'], data['images']
    with_boxes = {a['image_id'] for a in data['annotations']}
    result = CocoFile(path, data, tuple(c['name'] for c in cats), tuple(c['id'] for c in cats),
                      sum(im['id'] not in with_boxes for im in images))
    _read[key] = result
    return result


def forget_coco(path: str) -> None:
    """Drop this process's parse of ``path``: the next :func:`read_coco` reads it again."""
    real = osp.abspath(path)
    for key in [k for k in _read if k[0] == real]:
        del _read[key]


def coco_frame(im: dict, stored: tuple, orientation: int) -> tuple[bool, tuple]:
    """(whether to apply the EXIF orientation, (width, height) in that frame) for the COCO image
    entry ``im`` whose file stores ``stored`` pixels with EXIF ``orientation``.

    The boxes are in the frame the JSON's width/height describe: the stored pixels when they
    are the stored size (and not the displayed one), as the course's data and a reader that
    ignores EXIF have them; otherwise the displayed image, as annotation tools show it and
    mmdet's loader decodes it by default: sizes of the displayed image, sizes that cannot tell
    (orientations 2-4 keep the size), no sizes, or sizes that match neither (then logged as a
    size that differs). Orientation 1 or none: the stored pixels."""
    if orientation <= 1:
        return False, stored
    w, h = stored
    displayed = (h, w) if orientation in _QUARTER_TURNS else stored
    given = (im.get('width'), im.get('height'))
    if given == stored and displayed != stored:
        return False, stored
    return True, displayed


def exif_rules(ann_file: str, img_dir: str, paths) -> dict:
    """{path: whether the dataset applies its EXIF orientation} for each of ``paths`` that is
    an image of the COCO file ``ann_file`` (images in ``img_dir``), decided as the dataset
    decides (:func:`coco_frame`), so a tool that reads single files sees the same frame."""
    by_path = {osp.normpath(osp.join(img_dir, im['file_name'])): im
               for im in read_coco(ann_file).data['images']}
    out = {}
    for p in paths:
        im = by_path.get(osp.normpath(osp.abspath(p)))
        if im is not None:
            *stored, orientation = read_image_header(p)
            out[p] = coco_frame(im, tuple(stored), orientation)[0]
    return out


def missing_images(images: list, img_dir: str) -> list:
    """(index, image id, path) of every entry of ``images`` (the annotation file's "images"
    list) whose file is not in ``img_dir``."""
    present, missing = {}, []
    for i, im in enumerate(images):
        p = osp.join(img_dir, im['file_name'])
        folder = osp.dirname(p)
        if folder not in present:  # one listing per folder, not a stat per image
            present[folder] = set(os.listdir(folder)) if osp.isdir(folder) else set()
        if osp.basename(p) not in present[folder]:
            missing.append((i, im['id'], p))
    return missing


@DATASETS.register_module()
class CocoFormatDataset(SeededSamplesMixin, CocoDataset):
    """mmdet's CocoDataset (same parsing of boxes, crowd and empty images, same ``filter_cfg``)
    on ``<data_root>/annotations/instances_<split>.json`` and ``<data_root>/<split>/`` unless
    ``ann_file`` / ``data_prefix`` say otherwise; the classes are the file's categories in their
    order, unless ``metainfo=dict(classes=...)`` names some of them."""

    def __init__(self, *args, split: str = 'training', ann_file: str = '',
                 data_prefix: dict | None = None, data_root: str = '', metainfo=None, **kwargs):
        self.split = split
        ann_file = ann_file or ANN_FILE.format(split=split)
        data_prefix = data_prefix or dict(img=f'{split}/')
        if not (metainfo or {}).get('classes'):
            path = ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)
            classes = read_coco(path).classes
            metainfo = dict(metainfo or {}, classes=classes, palette=palette(len(classes)))
        super().__init__(*args, ann_file=ann_file, data_prefix=data_prefix,
                         data_root=data_root, metainfo=metainfo, **kwargs)

    def load_data_list(self) -> list[dict]:
        coco = read_coco(self.ann_file)
        by_name = dict(zip(coco.classes, coco.cat_ids))
        unknown = [c for c in self.metainfo['classes'] if c not in by_name]
        if unknown:
            raise CocoDataError(f'{self.ann_file}: metainfo classes {unknown} are not among its '
                                'categories')
        # labels follow metainfo's order (upstream takes the file's order for any subset)
        self.cat_ids = [by_name[c] for c in self.metainfo['classes']]
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        anns_of, self.cat_img_map = {}, {c: [] for c in coco.cat_ids}  # upstream's filter_data
        for k, a in enumerate(coco.data['annotations']):
            anns_of.setdefault(a['image_id'], []).append((k, a))
            self.cat_img_map[a['category_id']].append(a['image_id'])
        counts, examples = Counter(), {}

        def note(kind: str, example: str) -> None:
            counts[kind] += 1
            examples.setdefault(kind, example)

        wanted = set(self.cat_ids)
        data_list = []
        for i, im in enumerate(coco.data['images']):
            info = dict(im, img_id=im['id'])
            # mmdet keeps only the part of each box inside width x height: the file decides
            path = osp.join(self.data_prefix['img'], im['file_name'])
            *stored, orientation = read_image_header(path)
            apply, (w, h) = coco_frame(im, tuple(stored), orientation)
            if orientation > 1:
                given = (f'{im["width"]}x{im["height"]} in the JSON' if 'width' in im
                         and 'height' in im else 'no width/height in the JSON')
                note(ORIENTED if apply else STORED, f'images[{i}] (id {im["id"]}): '
                     f'orientation {orientation}, {given}, {w}x{h} '
                     + ('displayed' if apply else 'stored'))
            if 'width' in im and 'height' in im and (im['width'], im['height']) != (w, h):
                note(SIZE_DIFFERS, f'images[{i}] (id {im["id"]}): {im["width"]}x{im["height"]} '
                     f'in the JSON, {w}x{h} in {path}')
            info.update(width=w, height=h)
            anns = []
            for k, a in anns_of.get(im['id'], []):
                where = f'annotations[{k}] (id {a["id"]})'
                x, y, bw, bh = a['bbox']
                if a.get('ignore', False):  # mmdet leaves these out of training and scoring
                    note(IGNORED, where)
                elif max(0, min(x + bw, w) - max(x, 0)) * max(0, min(y + bh, h) - max(y, 0)) == 0:
                    note(OUTSIDE, where)
                elif bw < 1 or bh < 1:
                    note(TINY, where)
                elif a['category_id'] not in wanted:
                    note(OTHER_CLASS, where)
                elif a['area'] <= 0:  # mmdet would drop the box from training and scoring
                    note(ZERO_AREA, where)
                    a = dict(a, area=bw * bh)
                anns.append(a)
            data_info = self.parse_data_info(dict(raw_img_info=info, raw_ann_info=anns))
            data_info[APPLY_EXIF] = apply
            data_list.append(data_info)
        logger = MMLogger.get_current_instance()
        for kind in (ORIENTED, STORED, SIZE_DIFFERS, ZERO_AREA, OUTSIDE, TINY, IGNORED,
                     OTHER_CLASS):
            if counts[kind]:
                logger.log(logging.INFO if kind in (OTHER_CLASS, ORIENTED, STORED)
                           else logging.WARNING,
                           f'{self.ann_file}: {counts[kind]} x {kind} (e.g. {examples[kind]})')
        forget_coco(self.ann_file)  # as upstream frees its COCO api: the data list has it all
        boxes = sum(len(d['instances']) for d in data_list)
        logger.info(
            f'{self.ann_file}: {len(data_list)} images ({coco.no_boxes} without annotations), '
            f'{boxes} boxes of {len(self.cat_ids)} classes')
        return data_list
