"""Unlabeled image folder that skips unreadable images instead of stopping training.

One truncated file in a folder of 512,000 PNGs otherwise stops MoCo pretraining with
``failed to load image: .../8.PNG``, and a requeued job replays the same order and dies on the
same file again. :class:`UnlabeledImageFolder` logs such a file, counts it and trains on another
image in its place; too many unreadable files still stop the job (a damaged copy or mount).
Ranks other than 0 have no log file in mmengine (and an ERROR-level console), so each names its
files in ``<log_dir>/unreadable_images_rank<R>.log`` as it finds them.
:class:`UnreadableImageHook` (engine/hooks) logs the count over all ranks once per epoch in the
main process.
"""
from __future__ import annotations

import logging

from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS

from ..fileio.listing import list_data_files
from ..fileio.squashfs import ImageChangedError
from .samplers import SeededSamplesMixin
from .unreadable import CHECK_TOOL, UnreadableImagesError, UnreadableLog, log_on_this_rank


@DATASETS.register_module()
class UnlabeledImageFolder(SeededSamplesMixin, CustomDataset):
    """mmpretrain's ``CustomDataset`` (same ``data_root`` / ``with_label`` / ``extensions``
    scanning, sub-folders included, extensions matched case-insensitively) that survives
    unreadable images in training.

    When a loading transform of the pipeline (any ``LoadImageFromFile``, first in the MoCo
    pipeline) raises or returns nothing, the file is logged as a warning (first time only) and
    counted, and :meth:`prepare_data` returns None: mmengine's ``BaseDataset.__getitem__`` then
    loads a random other index instead. That index comes from ``np.random``, which
    :class:`SeededSamplesMixin` has just seeded from the sample's seed, so the substitute and its
    augmentation are as reproducible as the sample itself. Errors raised by other transforms
    propagate (they are bugs, not bad files), and in ``test_mode`` nothing is skipped.

    Args:
        max_unreadable: most distinct unreadable files tolerated (default 100, 0.02% of 512,000
            images); one more raises :class:`UnreadableImagesError`, which stops training and
            names the count and a few files. A file counts once however often it fails (first
            read, later epochs, picked again as a substitute). The count is per training process
            (each GPU rank, with all its loader workers) and starts at 0 when a job starts or
            resumes. Build the dataset with ``lazy_init=False`` (the default) so the counter
            exists before the workers start.
        **kwargs: :class:`mmpretrain.datasets.CustomDataset` arguments.
    """

    def __init__(self, *args, max_unreadable: int = 100, **kwargs) -> None:
        if max_unreadable < 0:
            raise ValueError(f'max_unreadable must be >= 0, got {max_unreadable}')
        self.max_unreadable = max_unreadable
        self.unreadable: UnreadableLog | None = None
        super().__init__(*args, **kwargs)

    def _find_samples(self) -> list:
        """The image files under the folder, listed by the rules that make a folder and its
        squashfs image list the same files in the same order (custom_modules/fileio/listing.py):
        hidden names skipped and counted, links followed in a folder and refused in an image."""
        if self.with_label:
            return super()._find_samples()
        files = list_data_files(self.img_prefix)
        samples = [p for p in files if self.is_valid_file(p)]
        if not samples:
            raise RuntimeError(f'Found 0 files in subfolders of: {self.data_prefix}. '
                               f'Supported extensions are: {",".join(self.extensions)}')
        return samples

    def full_init(self) -> None:
        super().full_init()
        if self.unreadable is None:
            self.unreadable = UnreadableLog(len(self))

    def prepare_data(self, idx):
        data = self.get_data_info(idx)
        if self.test_mode:
            return self.pipeline(data)
        path = data.get('img_path')
        for t in self.pipeline.transforms:  # mmengine's Compose.__call__, loads guarded
            if isinstance(t, LoadImageFromFile):
                try:
                    data = t(data)
                    error = None if data is not None else 'the loader returned nothing'
                except ImageChangedError:  # the whole data set changed, not one file: stop
                    raise
                except Exception as e:
                    error = f'{type(e).__name__}: {e}'
                if error is not None:
                    self._unreadable_image(idx, path, error)
                    return None
            else:
                data = t(data)
            if data is None:
                return None
        return data

    def _unreadable_image(self, idx: int, path: str, error: str) -> None:
        new, count = self.unreadable.add(idx)
        if count > self.max_unreadable:
            examples = self.unreadable_files(5)
            raise UnreadableImagesError(
                f'{count} unreadable images (more than max_unreadable={self.max_unreadable}), '
                f'e.g. {", ".join(examples)}; last error: {path}: {error}. Find them all with '
                f'`{CHECK_TOOL.format(self.img_prefix)}`, then remove or replace them.')
        if new:
            msg = (f'unreadable image {path} ({error}): training uses another image in its place '
                   f'({count} unreadable so far, max_unreadable={self.max_unreadable})')
            print_log(msg, logger='current', level=logging.WARNING)
            log_on_this_rank(msg)

    def unreadable_files(self, limit: int | None = None) -> list[str]:
        """Paths of the unreadable files found so far by this process and its workers."""
        indices = self.unreadable.indices()[:limit] if self.unreadable else []
        return [self.get_data_info(i)['img_path'] for i in indices]
