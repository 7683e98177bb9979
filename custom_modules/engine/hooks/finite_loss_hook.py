"""Stop at the first non-finite loss, before it is saved."""
import math

import torch
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
        losses = {k: float(v.detach()) if torch.is_tensor(v) else float(v)
                  for k, v in (outputs or {}).items() if k.startswith('loss')}
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            raise FloatingPointError(
                f'non-finite loss {bad} at iteration {runner.iter + 1} (epoch {runner.epoch + 1}, '
                f'batch {batch_idx + 1}); stopped before saving this step. The last checkpoint in '
                f'{runner.work_dir} is intact: lower the lr or fix the data, then --resume.')
