"""COCO-format detection data: mmdet's CocoDataset with the class list taken from the file.

Layout recognised by ``--data-root DIR`` (tools/dataset_converters/course_to_coco.py writes it):
``DIR/annotations/instances_<split>.json`` with each image at ``DIR/<split>/<file_name>``; any
other layout through ``ann_file`` and ``data_prefix=dict(img=...)``.

:func:`read_coco` reads and checks a file once per process (the tools call it before building
the runner, so bad input stops with one line naming the file and the entry; the dataset reuses
the parsed file). Classes: the names of ``categories`` in the file's order, any ids, label k
is the k-th category; a config's ``metainfo=dict(classes=...)`` may name a subset.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from dataclasses import dataclass

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine import fileio
from mmengine.logging import MMLogger

from .samplers import SeededSamplesMixin
from .classes import palette

ANN_FILE = 'annotations/instances_{split}.json'


class CocoDataError(ValueError):
    pass


@dataclass
class CocoFile:
    path: str
    data: dict  # the parsed JSON, 'area' filled in where it was absent
    classes: tuple
    cat_ids: tuple  # category id of each class, same order
    no_boxes: int  # images without any annotation


_read = {}  # (path, size, mtime) -> CocoFile: the tools' check and the dataset share one parse


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
MISSING_KEY, DUPLICATE, UNKNOWN_IMAGE, UNKNOWN_CATEGORY, BAD_BOX = (
    'missing key', 'duplicate id or name', 'annotation on an unknown image id',
    'unknown category id', 'malformed bbox')
_REQUIRED = (('categories', ('id', 'name')), ('images', ('id', 'file_name', 'width', 'height')),
             ('annotations', ('id', 'image_id', 'category_id', 'bbox')))


def structure_problems(path: str, data: dict) -> list:
    """Every (kind, message) that makes the data ambiguous, each message naming the file and
    the entry: a missing key, duplicate image / category / annotation ids or category names, an
    annotation on an image id or of a category id that does not exist, a bbox that is not 4
    numbers."""
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
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
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
        for a in coco.data['annotations']:
            anns_of.setdefault(a['image_id'], []).append(a)
            self.cat_img_map[a['category_id']].append(a['image_id'])
        data_list = []
        for im in coco.data['images']:
            info = dict(im, img_id=im['id'])
            data_list.append(self.parse_data_info(
                dict(raw_img_info=info, raw_ann_info=anns_of.get(im['id'], []))))
        boxes = sum(len(d['instances']) for d in data_list)
        MMLogger.get_current_instance().info(
            f'{self.ann_file}: {len(data_list)} images ({coco.no_boxes} without annotations), '
            f'{boxes} boxes of {len(self.cat_ids)} classes')
        return data_list
