"""Stop at the first non-finite loss, before it is saved."""
import math

import torch
from mmengine.hooks import Hook
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import HOOKS

from .checkpoint_hooks import read_last_checkpoint


def _in_fp16(optim_wrapper) -> bool:
    # mmengine's AmpOptimWrapper autocasts to float16 unless given another dtype
    return (isinstance(optim_wrapper, AmpOptimWrapper)
            and getattr(optim_wrapper, 'cast_dtype', None) in (None, torch.float16))


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop at the first NaN/inf loss, naming the iteration and how to continue.

    Runs before the checkpoint hook, so a diverged step is never saved: the last checkpoint
    in the work folder stays usable for ``--resume`` after lowering the LR or fixing the data,
    or, for a float16 run (the known cause of late NaNs in MAE pretraining), in bfloat16.
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        losses = {k: float(v.detach()) if torch.is_tensor(v) else float(v)
                  for k, v in (outputs or {}).items() if k.startswith('loss')}
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if not bad:
            return
        last = read_last_checkpoint(runner.work_dir)
        if not last:
            how = (f'no checkpoint in {runner.work_dir} yet: lower the lr or fix the data, then '
                   'start again')
        else:
            how = (f'the last checkpoint, {last}, is intact: lower the lr or fix the data, then '
                   f'continue it with --resume {last}')
            if _in_fp16(runner.optim_wrapper):
                how += (f'; this run is in float16 mixed precision, where an overflow is the '
                        f'likely cause: continue it in bfloat16 with --resume {last} --amp bf16 '
                        '--allow-input-change')
        raise FloatingPointError(
            f'non-finite loss {bad} at iteration {runner.iter + 1} (epoch {runner.epoch + 1}, '
            f'batch {batch_idx + 1}); stopped before saving this step. {how}.')
