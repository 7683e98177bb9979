"""What the unlabeled dataset and UnreadableImageHook share about unreadable images: the count in
shared memory, the per-rank log and the command that finds them all."""
import multiprocessing as mp
import os.path as osp
import time

import numpy as np
from mmengine.dist import get_rank
from mmengine.logging import MMLogger


CHECK_TOOL = 'python tools/check_dataset.py {} --decode'  # --decode: finds truncated files


def rank_log(log_dir: str, rank: int) -> str:
    """Where a rank other than 0 names its unreadable files."""
    return osp.join(log_dir, f'unreadable_images_rank{rank}.log')


def log_on_this_rank(msg: str) -> None:
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


class UnreadableLog:
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
        return UnreadableLog(self.size)

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
