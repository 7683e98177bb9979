"""What a data path given to a tool is, decided here once for every tool.

``describe(path)`` answers, in this order:
1. where the files are: a folder, or a place inside a squashfs image (``labeled.sqsh``,
   ``data.sqsh/labeled``), which the datasets then read as a ``sqsh://`` path
   (custom_modules/fileio/sqsh_backend.py);
2. what it holds: COCO JSON (``annotations/instances_<split>.json``, images in ``<split>/``), the
   course layout (``<split>/images/`` and ``<split>/labels/``), or else a plain image folder
   (pretraining, inference);
3. which splits it has.

tools/train.py, test.py, infer.py and browse_dataset.py (through config_edits.set_data_root and
checks.check_data_folders), check_dataset.py (and with it the Slurm chain's pre-submit check and
``make demo``), plot_curves.py and dataset_converters/course_to_coco.py all call it. A new kind of
data is added here (its name in KINDS and its test in ``kind``) and in the dataset that reads it.
"""
import functools
import os.path as osp
from dataclasses import dataclass

from mmengine import fileio

from custom_modules.datasets.coco_det import coco_ann_file, coco_splits
from custom_modules.errors import UserError
from custom_modules.fileio.sqsh_backend import is_sqsh_uri, resolve_data_root

KINDS = ('coco', 'course', 'images')


@dataclass(frozen=True)
class DataSource:
    given: str  # the path as the user wrote it
    root: str  # a folder, or the sqsh:// path of a folder inside an image

    @property
    def in_image(self) -> bool:
        return is_sqsh_uri(self.root)

    @functools.cached_property
    def coco_splits(self) -> tuple:
        if not fileio.isdir(fileio.join_path(self.root, 'annotations')):
            return ()
        return tuple(coco_splits(self.root))

    @functools.cached_property
    def course_splits(self) -> tuple:
        """Sub-folders with ``images/`` or ``labels/`` (a split missing one of them is still a
        split, which check_dataset.py reports)."""
        return tuple(d for d in sorted(fileio.list_dir_or_file(self.root, list_file=False))
                     if any(fileio.isdir(fileio.join_path(self.root, d, sub))
                            for sub in ('images', 'labels')))

    @property
    def is_coco(self) -> bool:
        return bool(self.coco_splits)

    @property
    def kind(self) -> str:
        if self.is_coco:
            return 'coco'
        return 'course' if self.course_splits else 'images'

    @property
    def splits(self) -> tuple:
        return {'coco': self.coco_splits, 'course': self.course_splits}.get(self.kind, ())

    def ann_file(self, split: str) -> str:
        return coco_ann_file(self.root, split)

    def split_folder(self, split: str) -> str:
        return fileio.join_path(self.root, split)


def describe(path: str, flag: str = '--data-root') -> DataSource:
    """The data at ``path``; a UserError (one line, naming ``flag`` and the path) when there is
    none, and for COCO JSON inside an image (the COCO reader opens local files)."""
    source = DataSource(path, resolve_data_root(path, flag))
    if source.in_image and source.is_coco:
        raise UserError(f'{flag} {path}: COCO-format data is read from a folder, not from inside '
                        'a squashfs image: unpack it (unsquashfs -d DIR IMAGE)')
    return source


def is_data_path(path: str) -> bool:
    """Whether ``path`` is a folder, or a path into a squashfs image, without reading it."""
    from custom_modules.fileio.squashfs import split_image_path
    return bool(path) and (osp.isdir(path) or split_image_path(path) is not None)
