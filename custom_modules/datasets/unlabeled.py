"""Unlabeled image folder that skips unreadable images instead of stopping training.

One truncated file in a folder of 512,000 PNGs otherwise stops MoCo pretraining with
``failed to load image: .../8.PNG``, and a requeued job replays the same order and dies on the
same file again. :class:`UnlabeledImageFolder` logs such a file, counts it and trains on another
image in its place; too many unreadable files still stop the job (a damaged copy or mount).
Ranks other than 0 have no log file in mmengine (and an ERROR-level console), so each names its
files in ``<log_dir>/unreadable_images_rank<R>.log`` as it finds them.
:class:`UnreadableImageHook` logs the count over all ranks once per epoch in the main process.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os.path as osp
import time

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine.dist import all_gather_object, get_rank, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import MMLogger, print_log
from mmengine.registry import HOOKS
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS

from ..resumable import SeededSamplesMixin

CHECK_TOOL = 'python tools/check_dataset.py {} --decode'  # --decode: finds truncated files


def rank_log(log_dir: str, rank: int) -> str:
    """Where a rank other than 0 names its unreadable files."""
    return osp.join(log_dir, f'unreadable_images_rank{rank}.log')


def _log_on_this_rank(msg: str) -> None:
    """print_log for a rank other than 0, whose warnings mmengine writes nowhere: append the
    message to :func:`rank_log` beside the run's log (this rank and its loader workers append,
    one short write each)."""
    rank = get_rank()
    log_file = MMLogger.get_current_instance().log_file if rank else None  # the run's log
    if not log_file:
        return
    with open(rank_log(osp.dirname(log_file), rank), 'a') as f:
        f.write(f'{time.strftime("%Y/%m/%d %H:%M:%S")} - rank {rank} - WARNING - {msg}\n')


class UnreadableImagesError(RuntimeError):
    """More unreadable images than ``max_unreadable``."""


class _UnreadableLog:
    """How often each dataset index failed to load, in shared memory.

    Created in the main process before the DataLoader starts its workers, so forked workers
    (persistent or not) and spawned ones (it pickles while spawning) all update the same memory
    and the main process sees their counts. No lock (a lock made in a fork context cannot reach
    spawned workers): each update is one worker incrementing one cell, and two workers failing on
    the same file at the same moment at worst lose one increment of the skipped-loads total.
    4 bytes per image: 2 MB for 512,000 images.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._fails = mp.RawArray('I', max(size, 1))

    def __deepcopy__(self, memo):
        # BaseDataset.get_subset deep-copies the dataset: a copy gets its own, empty log
        return _UnreadableLog(self.size)

    def _array(self) -> np.ndarray:
        return np.frombuffer(self._fails, dtype=np.uint32)[:self.size]

    def add(self, index: int) -> tuple[bool, int]:
        """Record a failed load of ``index``: (first failure of this file?, distinct files)."""
        self._fails[index] += 1
        return self._fails[index] == 1, self.num_files

    @property
    def num_files(self) -> int:
        """Distinct files that failed."""
        return int(np.count_nonzero(self._array()))

    @property
    def num_skipped(self) -> int:
        """Loads that failed and were replaced by another image."""
        return int(self._array().sum())

    def indices(self) -> list[int]:
        return np.flatnonzero(self._array()).tolist()


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
        self.unreadable: _UnreadableLog | None = None
        super().__init__(*args, **kwargs)

    def full_init(self) -> None:
        super().full_init()
        if self.unreadable is None:
            self.unreadable = _UnreadableLog(len(self))

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
            _log_on_this_rank(msg)

    def unreadable_files(self, limit: int | None = None) -> list[str]:
        """Paths of the unreadable files found so far by this process and its workers."""
        indices = self.unreadable.indices()[:limit] if self.unreadable else []
        return [self.get_data_info(i)['img_path'] for i in indices]


def _find_datasets(dataset) -> list:
    """The UnlabeledImageFolder datasets in ``dataset`` and its wrappers (Concat, Repeat...)."""
    if isinstance(dataset, UnlabeledImageFolder):
        return [dataset]
    found = []
    for inner in list(getattr(dataset, 'datasets', [])) + [getattr(dataset, 'dataset', None)]:
        if inner is not None:
            found += _find_datasets(inner)
    return found


@HOOKS.register_module()
class UnreadableImageHook(Hook):
    """After every training epoch, log ``N unreadable images skipped so far`` (when N > 0).

    N is the number of distinct unreadable files found since the job started, over all ranks
    (their file lists are gathered, so every rank must run this hook, as it does from the
    config), with a few names, the files where the other ranks named theirs, and the command
    that finds them all.
    """

    def before_train(self, runner) -> None:
        if not _find_datasets(runner.train_dataloader.dataset):
            runner.logger.warning('UnreadableImageHook: the training dataset is not an '
                                  'UnlabeledImageFolder; nothing to report')

    def after_train_epoch(self, runner) -> None:
        datasets = _find_datasets(runner.train_dataloader.dataset)
        local = [(f, d.img_prefix) for d in datasets for f in d.unreadable_files()]
        gathered = all_gather_object(local)
        if not is_main_process():
            return
        files = sorted({f for rank in gathered for f, _ in rank})
        if files:
            folders = sorted({folder for rank in gathered for _, folder in rank})
            others = [rank_log(runner.log_dir, r) for r, found in enumerate(gathered)
                      if r and found]
            runner.logger.warning(
                f'{len(files)} unreadable images skipped so far, e.g. {", ".join(files[:3])}; '
                + (f'ranks other than 0 named theirs in {", ".join(others)}; ' if others else '')
                + 'find them all with '
                + ' and '.join(f'`{CHECK_TOOL.format(folder)}`' for folder in folders))
