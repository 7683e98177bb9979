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


def hashed_seed(*parts) -> int:
    """A 32-bit seed from ``parts``: unrelated streams for neighbouring values."""
    digest = hashlib.blake2b('/'.join(map(str, parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, 'little')


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs (torch: every device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return hashed_seed(seed, epoch, index)


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
        seed_all(idx.seed)
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



@DATA_SAMPLERS.register_module()
class SemiSupervisedSampler(Sampler):
    """Batches of ``source_ratio`` labeled : unlabeled images from a two-part concatenation
    (labeled first), in epochs of one pass over the labeled part, as indices for
    ``ResumableBatchSampler`` to group ``batch_size`` at a time.

    The labeled part is shuffled per epoch and split over the ranks as mmengine's
    ``DefaultSampler`` does; the unlabeled part is one endless stream of shuffles, each rank
    taking every ``world_size``-th index, that the next epoch continues where this one stopped.
    Both depend only on (seed, epoch), so a resumed run sees the same batches: unlike mmdet's
    ``MultiSourceSampler``, which is endless and draws from the global NumPy RNG while the model
    trains. Per rank and epoch: ``len(labeled) / world_size // labeled_per_batch`` batches.
    """

    def __init__(self, dataset, batch_size: int, source_ratio=(1, 4), shuffle: bool = True,
                 seed: int | None = None) -> None:
        from mmengine.dist import get_dist_info, sync_random_seed
        sizes = [len(d) for d in getattr(dataset, 'datasets', ())]
        if len(sizes) != 2 or len(source_ratio) != 2:
            raise ValueError('SemiSupervisedSampler needs a concatenation of two datasets '
                             '(labeled, unlabeled) and a source_ratio of two numbers')
        self.num_labeled, self.num_unlabeled = sizes
        self.rank, self.world_size = get_dist_info()
        self.batch_size = batch_size
        unlabeled = int(batch_size * source_ratio[1] / sum(source_ratio))
        self.per_batch = (batch_size - unlabeled, unlabeled)
        if min(self.per_batch) < 1:
            raise ValueError(f'batch_size {batch_size} with source_ratio {list(source_ratio)} '
                             'leaves no image of one source in a batch')
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.epoch = 0
        self._perm = (-1, None)  # the unlabeled shuffle last drawn: (its number, indices)
        per_rank = -(-self.num_labeled // self.world_size)
        self.batches = per_rank // self.per_batch[0]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _labeled(self) -> list:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_labeled, generator=g).tolist()
        else:
            order = list(range(self.num_labeled))
        total = -(-self.num_labeled // self.world_size) * self.world_size
        order = (order * (total // len(order) + 1))[:total]  # padded as DefaultSampler pads
        return order[self.rank::self.world_size]

    def _unlabeled(self, position: int) -> int:
        """The unlabeled index at this rank's ``position`` in the stream."""
        q = position * self.world_size + self.rank
        number, at = divmod(q, self.num_unlabeled)
        if self._perm[0] != number:
            if self.shuffle:
                g = torch.Generator()
                g.manual_seed(self.seed + 1_000_003 * (number + 1))
                self._perm = (number, torch.randperm(self.num_unlabeled, generator=g))
            else:
                self._perm = (number, torch.arange(self.num_unlabeled))
        return self.num_labeled + int(self._perm[1][at])

    def __iter__(self):
        labeled = self._labeled()
        num_l, num_u = self.per_batch
        position = self.epoch * self.batches * num_u
        for b in range(self.batches):
            yield from labeled[b * num_l:(b + 1) * num_l]
            for k in range(num_u):
                yield self._unlabeled(position + b * num_u + k)

    def __len__(self) -> int:
        return self.batches * sum(self.per_batch)
