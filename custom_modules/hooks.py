"""Training guards."""
import math

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop at the first NaN/inf loss, naming the iteration.

    Runs before the checkpoint hook, so a diverged step is never saved: the last checkpoint
    in the work folder stays usable for ``--resume`` after lowering the LR or fixing the data.
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        bad = {k: float(v) for k, v in (outputs or {}).items()
               if k.startswith('loss') and not math.isfinite(float(v))}
        if bad:
            raise FloatingPointError(
                f'non-finite loss {bad} at iteration {runner.iter + 1} (epoch {runner.epoch + 1}, '
                f'batch {batch_idx + 1}); stopped before saving this step. The last checkpoint in '
                f'{runner.work_dir} is intact: lower the lr or fix the data, then --resume.')


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save every rank's Python/NumPy/torch RNG states in epoch checkpoints and restore them
    on resume, so random augmentation and RoI sampling after a resume continue exactly where the
    checkpoint left them: a requeued run ends with the weights of an uninterrupted one."""

    _states = None

    def after_train_epoch(self, runner) -> None:
        # every rank runs this, before the checkpoint hook (lower priority); saving itself is
        # rank 0 only, so the states are gathered here, not in before_save_checkpoint
        import random

        import numpy as np
        import torch
        from mmengine.dist import all_gather_object
        state = dict(python=random.getstate(), numpy=np.random.get_state(),
                     torch=torch.get_rng_state(),
                     cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        self._states = all_gather_object(state)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._states is not None:
            checkpoint.setdefault('meta', {})['rng_states'] = self._states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        import random

        import numpy as np
        import torch
        from mmengine.dist import get_rank, get_world_size
        states = checkpoint.get('meta', {}).get('rng_states')
        if not runner._resume or not states or len(states) != get_world_size():
            return  # fine-tuning from weights, or a different number of ranks: fresh RNG
        s = states[get_rank()]
        random.setstate(s['python'])
        np.random.set_state(s['numpy'])
        torch.set_rng_state(s['torch'])
        if s['cuda'] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s['cuda'])
