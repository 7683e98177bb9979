"""Convert the course's labeled layout to COCO JSON, into a folder any COCO tool opens.

    python tools/dataset_converters/course_to_coco.py /labeled /scratch/labeled_coco
    python tools/dataset_converters/course_to_coco.py /data/labeled.sqsh out --splits validation

SRC is the course layout (``<split>/images/<id>.JPEG`` + ``<split>/labels/<id>.yml``), a folder or
a path through a squashfs image. OUT gets, per split::

    OUT/annotations/instances_<split>.json    COCO: images, annotations, categories
    OUT/<split>/<id>.JPEG                     the image (a symlink, a copy, or left to you)

which is a ``--data-root`` as it is. Conventions:

- categories: the 100 course classes in the course order, ``id`` = course index + 1 (1..100):
  COCO ids start at 1, and tools treat 0 as unusual (background, or "no category").
- image ``id``: the course file id (1..30000 training, 30001..50000 validation), so results and
  logs name the same image in both layouts; ``file_name`` is ``<id>.JPEG``.
- annotation ``id``: 1, 2, ... per split (COCOeval reads id 0 as "no match").
- ``bbox``: ``[x, y, w, h]`` = ``[xmin, ymin, xmax - xmin, ymax - ymin]`` in pixels, computed in
  double from the course reader's float32 boxes, so mmdet's CocoDataset (``x + w``) gives back
  exactly the course reader's xyxy floats; ``area`` = w * h, as CocoMetric computes it for the
  course layout; ``iscrowd`` 0.
- the boxes and sizes are those the course reader (``LabeledDetDataset``) uses: sizes from the
  image headers, boxes clipped to the image and boxes without area dropped (the summary counts
  these repairs). Boxes under 1 px wide or high are written, but mmdet's CocoDataset skips them:
  the summary counts them too.

``--link``: ``symlink`` (the default for a folder: absolute links, nothing copied), ``copy``, or
``none`` (only the JSON files; put the images at ``OUT/<split>/<file_name>`` yourself). A link
cannot point into a squashfs image, so for SRC inside one the images are copied (said in the
summary), and ``--link symlink`` is refused. A rerun replaces the files it writes.

Bad input (a missing split folder, a label file the course reader refuses): one ``error:`` line,
exit status 2, before anything is written.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/: the toolkit
from toolkit import bootstrap  # noqa: E402

bootstrap.setup()

from mmengine import fileio  # noqa: E402

from custom_modules.datasets.classes import LABELED_CLASSES  # noqa: E402
from custom_modules.datasets.labeled_index import LabeledDataError, load_split  # noqa: E402
from custom_modules.fileio.sqsh_backend import is_sqsh_uri  # noqa: E402
from custom_modules.errors import UserError  # noqa: E402
from custom_modules.fileio.atomic_local import atomic_open  # noqa: E402
from toolkit.data_source import describe  # noqa: E402

SPLITS = ('training', 'validation')
LINK_MODES = ('symlink', 'copy', 'none')
CATEGORIES = [dict(id=i + 1, name=name) for i, name in enumerate(LABELED_CLASSES)]


@dataclass
class SplitSummary:
    split: str
    json_path: str
    image_dir: str
    link: str
    from_image: bool = False   # SRC inside a squashfs image: images copied, never linked
    images: int = 0
    boxes: int = 0
    under_1px: int = 0   # boxes mmdet's CocoDataset skips (w < 1 or h < 1)
    repairs: Counter = field(default_factory=Counter)   # the course reader's repairs, by kind
    seconds: float = 0.0

    def line(self) -> str:
        verb = {'symlink': 'linked into', 'copy': 'copied into', 'none': 'expected in'}[self.link]
        text = (f'{self.split}: {self.images} images, {self.boxes} boxes, {len(CATEGORIES)} '
                f'categories -> {self.json_path}; images {verb} {self.image_dir}/ '
                f'({self.seconds:.1f} s)')
        if self.from_image and self.link == 'copy':
            text += '; copied, as a link cannot point into a squashfs image'
        if self.repairs:
            text += '; course reader: ' + ', '.join(
                f'{n} x {kind}' for kind, n in sorted(self.repairs.items()))
        if self.under_1px:
            text += (f"; {self.under_1px} boxes under 1 px wide or high, which mmdet's "
                     'CocoDataset skips')
        return text


def coco_bbox(box) -> list[float]:
    """COCO ``[x, y, w, h]`` of an xyxy box: in double, where ``x + w`` gives back ``xmax``
    exactly for the float32 coordinates the course reader holds."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _place_image(src: str, dst: str, link: str) -> None:
    if osp.lexists(dst):  # replaced, never written through: it may link to the source itself
        os.remove(dst)
    if link == 'symlink':
        os.symlink(src, dst)
    elif is_sqsh_uri(src):
        with open(dst, 'wb') as f:
            f.write(fileio.get(src))
    else:
        shutil.copyfile(src, dst)


def _write_json(path: str, description: str, records) -> tuple[int, int]:
    """Stream one split's COCO file (atomically: a reader never sees half of one);
    returns (boxes, boxes under 1 px)."""
    boxes = under_1px = 0
    with atomic_open(path, 'w') as f:
        f.write('{"info": %s,\n"licenses": [],\n"categories": %s,\n"images": [' % (
            json.dumps(dict(description=description)), json.dumps(CATEGORIES)))
        for i, r in enumerate(records):
            f.write((',\n' if i else '\n') + json.dumps(dict(
                id=r.img_id, file_name=osp.basename(r.img_path), width=r.width,
                height=r.height)))
        f.write('\n],\n"annotations": [')
        for r in records:
            for box, label in zip(r.bboxes, r.labels):
                bbox = coco_bbox(box)
                under_1px += bbox[2] < 1 or bbox[3] < 1
                f.write((',\n' if boxes else '\n') + json.dumps(dict(
                    id=boxes + 1, image_id=r.img_id, category_id=int(label) + 1, bbox=bbox,
                    area=bbox[2] * bbox[3], iscrowd=0)))
                boxes += 1
        f.write('\n]}\n')
    return boxes, under_1px


def convert(src: str, out: str, splits=SPLITS, link: str | None = None,
            cache_dir: str | None = None, num_workers: int | None = None) -> list[SplitSummary]:
    """Convert ``src`` (the course layout; a folder or a path through a .sqsh image) into the
    COCO layout under ``out`` (see the module docstring); returns one summary per split.

    ``link``: 'symlink', 'copy' or 'none'; None: symlink for a folder, copy for an image.
    ``cache_dir``/``num_workers``: the course reader's index cache and parsing processes.
    Every split is read and checked before anything is written; bad input raises UserError.
    """
    source = describe(src, 'SRC')
    if source.kind == 'coco':
        raise UserError(f'SRC {src} is COCO-format data already (annotations/instances_*.json): '
                        'train on it with --data-root as it is')
    src_root, in_image = source.root, source.in_image
    if link is None:
        link = 'copy' if in_image else 'symlink'
    if link not in LINK_MODES:
        raise UserError(f'--link {link}: expected one of {", ".join(LINK_MODES)}')
    if link == 'symlink' and in_image:
        raise UserError(f'SRC {src} is inside a squashfs image, which a link cannot point into: '
                        'use --link copy (or none)')
    indexed = []
    for split in splits:
        start = time.time()
        try:
            records, report = load_split(src_root, split, LABELED_CLASSES, cache_dir=cache_dir,
                                         num_workers=num_workers)
        except (FileNotFoundError, LabeledDataError) as e:
            raise UserError(str(e)) from e
        indexed.append((split, records, report, time.time() - start))

    summaries = []
    for split, records, report, seconds in indexed:
        start = time.time()
        s = SplitSummary(split, osp.join(out, 'annotations', f'instances_{split}.json'),
                         osp.join(out, split), link, in_image, images=len(records),
                         repairs=report.problems)
        try:
            os.makedirs(osp.dirname(s.json_path), exist_ok=True)
            if link != 'none':
                os.makedirs(s.image_dir, exist_ok=True)
                for r in records:  # img_path is absolute (load_split): links work from anywhere
                    _place_image(r.img_path, osp.join(s.image_dir, osp.basename(r.img_path)),
                                 link)
            # the JSON last: a first run stopped half-way leaves no annotation file
            s.boxes, s.under_1px = _write_json(
                s.json_path, f'course layout {report.split_dir}, converted', records)
        except OSError as e:
            raise UserError(f'OUT {out}: cannot write ({e})') from e
        s.seconds = seconds + time.time() - start
        summaries.append(s)
    return summaries


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='Layout, id conventions and links vs copies: docs/data.md, "Converting the '
               'course layout to COCO".')
    parser.add_argument('src', help='the course layout: a folder with <split>/images and '
                        '<split>/labels, or a path through a .sqsh image holding them')
    parser.add_argument('out', help='output folder: gets annotations/instances_<split>.json '
                        'and <split>/<id>.JPEG')
    parser.add_argument('--splits', nargs='+', default=list(SPLITS), metavar='SPLIT',
                        help='sub-folders of SRC to convert (default: %(default)s)')
    parser.add_argument('--link', choices=LINK_MODES, default=None,
                        help='how images get into OUT/<split>/: symlink (default for a folder), '
                        'copy (default for SRC inside a .sqsh image, since a link cannot point '
                        'into an image), none (only the JSON files; the images must be put at '
                        'OUT/<split>/<file_name>)')
    args = parser.parse_args(argv)
    for s in convert(args.src, args.out, args.splits, args.link):
        print(s.line(), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(bootstrap.run(main))
