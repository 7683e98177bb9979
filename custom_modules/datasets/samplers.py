"""Batches whose indices carry their sample's seed, so a sample's augmentation depends only on
(sampler seed, epoch, index).

:class:`ResumableBatchSampler` hands every dataset index out as a :class:`SampleIndex`; datasets
that use :class:`SeededSamplesMixin` reseed Python, NumPy and torch from it before loading: not
on the loader worker that draws it, on persistent workers' history, or on where a run was
resumed. :meth:`ResumableBatchSampler.skip_next` lets the training loop start an epoch after the
batches an in-epoch checkpoint already trained.
"""
import hashlib
import random

import numpy as np
import torch
from mmengine.registry import DATA_SAMPLERS
from torch.utils.data import BatchSampler, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    digest = hashlib.blake2b(f'{seed}/{epoch}/{index}'.encode(), digest_size=4).digest()
    return int.from_bytes(digest, 'little')


class SampleIndex(int):
    """A dataset index with the seed its sample's random augmentation must use."""

    def __new__(cls, index: int, seed: int):
        obj = super().__new__(cls, index)
        obj.seed = seed
        return obj

    def __reduce__(self):  # loader workers receive indices pickled
        return SampleIndex, (int(self), self.seed)


def seed_sample(idx) -> int:
    """Reseed the global RNGs for the sample ``idx`` (when it carries a seed); return the plain
    index."""
    if isinstance(idx, SampleIndex):
        random.seed(idx.seed)
        np.random.seed(idx.seed)
        torch.manual_seed(idx.seed)
    return int(idx)


class SeededSamplesMixin:
    """Put before the dataset class: ``class D(SeededSamplesMixin, BaseDataset)``."""

    def __getitem__(self, idx):
        return super().__getitem__(seed_sample(idx))


@DATA_SAMPLERS.register_module()
class ResumableBatchSampler(Sampler):
    """Wraps a batch sampler (``batch_sampler`` config, e.g. mmdet's AspectRatioBatchSampler;
    default: torch's BatchSampler): same batches, indices as :class:`SampleIndex`, and
    :meth:`skip_next` to start the next epoch after its first N batches."""

    def __init__(self, sampler, batch_size: int, drop_last: bool = False,
                 batch_sampler: dict | None = None) -> None:
        self.sampler = sampler  # DistSamplerSeedHook calls sampler.set_epoch through this
        if batch_sampler is None:
            self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        else:
            self.batch_sampler = DATA_SAMPLERS.build(
                batch_sampler, default_args=dict(sampler=sampler, batch_size=batch_size,
                                                 drop_last=drop_last))
        self._skip = 0

    def skip_next(self, num_batches: int) -> None:
        self._skip = num_batches

    def __iter__(self):
        skip, self._skip = self._skip, 0
        seed, epoch = getattr(self.sampler, 'seed', 0) or 0, getattr(self.sampler, 'epoch', 0)
        for i, batch in enumerate(self.batch_sampler):
            if i >= skip:
                yield [SampleIndex(idx, sample_seed(seed, epoch, idx)) for idx in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)

