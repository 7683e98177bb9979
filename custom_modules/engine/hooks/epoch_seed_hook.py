"""Every epoch's randomness from (seed, epoch, rank) alone."""
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ...datasets.samplers import seed_all


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Reseed Python, NumPy and torch RNGs at the start of every training epoch from
    (seed, epoch, rank).

    Random augmentation and RoI sampling in an epoch then depend on nothing that happened
    before it, so a job resumed from an epoch checkpoint (requeue, preemption, kill -9, or the
    next stage of a staged schedule) replays exactly what an uninterrupted run does. Saving RNG
    states in checkpoints is not enough: the runner draws from torch's RNG between epochs
    (measured here), so a state captured at checkpoint time is not the one the next epoch sees.
    """

    priority = 'HIGHEST'

    def before_train_epoch(self, runner) -> None:
        seed = (int(runner.seed or 0) + 1_000_003 * runner.epoch + 7_919 * get_rank()) % 2**32
        seed_all(seed)
