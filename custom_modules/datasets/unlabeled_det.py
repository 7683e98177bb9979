"""Unlabeled images for semi-supervised detection, and the concatenation of labeled and
unlabeled sets that seeds each sample.

:class:`UnlabeledDetDataset` lists a folder of images (or a folder inside a ``.sqsh`` image) by
the same rules as pretraining's ``UnlabeledImageFolder`` (``custom_modules/fileio/listing.py``),
so the same files in the same order; each is a detection sample without objects, for the
teacher to label. :class:`SeededConcatDataset` is mmdet's ``ConcatDataset`` whose samples are
reseeded from the index the sampler gave (``samplers.SeededSamplesMixin``): the concatenation
hands its parts plain indices, so they could not do it themselves.
"""
from __future__ import annotations

import os.path as osp

from mmdet.datasets import BaseDetDataset, ConcatDataset
from mmdet.registry import DATASETS

from ..errors import UserError
from ..fileio.listing import list_data_files
from .classes import LABELED_CLASSES, LABELED_PALETTE
from .samplers import SeededSamplesMixin

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.tif', '.tiff')


@DATASETS.register_module()
class UnlabeledDetDataset(SeededSamplesMixin, BaseDetDataset):
    """Every image under ``data_root`` (sub-folders included, extensions matched
    case-insensitively), as a detection sample with no boxes.

    Args:
        extensions: file name endings taken as images.
        **kwargs: :class:`BaseDetDataset` arguments (``data_root``, ``pipeline``, ...).
    """

    METAINFO = dict(classes=LABELED_CLASSES, palette=LABELED_PALETTE)

    def __init__(self, *args, extensions=IMAGE_EXTENSIONS, **kwargs) -> None:
        self.extensions = tuple(e.lower() for e in extensions)
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        root = self.data_root
        files = [p for p in list_data_files(root) if p.lower().endswith(self.extensions)]
        if not files:
            raise UserError(f'{root}: no image files ({", ".join(self.extensions)}) in it or its '
                            'sub-folders')
        return [dict(img_path=osp.join(root, p), img_id=i, instances=[])
                for i, p in enumerate(files)]

    def filter_data(self) -> list[dict]:
        return self.data_list  # images without boxes are what this set is


@DATASETS.register_module()
class SeededConcatDataset(SeededSamplesMixin, ConcatDataset):
    """mmdet's ``ConcatDataset`` whose samples are seeded from the sampler's index."""
