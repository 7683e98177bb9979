"""A training loop that resumes inside an epoch and replays exactly.

:class:`ResumableEpochBasedTrainLoop` resumes from a checkpoint saved inside an epoch (by
``TimeLimitHook``): it skips the batches already trained (indices only, no image is read) and
restores every rank's RNG.
"""
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.logging import print_log
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop

from ...datasets.samplers import ResumableBatchSampler

RNG_KEY = 'rng_states'  # message hub entry: each rank's RNG state at an in-epoch checkpoint
# message hub entry: the epoch whose validation a stop cut short, to run after the resume
VAL_PENDING_KEY = 'validation_pending'


def capture_rng() -> dict:
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's epoch loop, able to resume from a checkpoint saved inside an epoch.

    Every epoch has ``len(dataloader)`` batches, so the iteration counter of a checkpoint says
    how many batches of its epoch were trained; those are skipped and each rank's RNG is set
    back to its state at the save. Needs :class:`ResumableBatchSampler` as the batch sampler.
    """

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        done = self._iter - self._epoch * len(self.dataloader)
        if not 0 <= done < len(self.dataloader):
            raise RuntimeError(
                f'the checkpoint was saved at iteration {self._iter} of epoch {self._epoch + 1}, '
                f'which does not fit {len(self.dataloader)} batches per epoch: the dataset, batch '
                'size or number of GPUs changed since it was written')
        rng = capture_rng()
        if done:
            batch_sampler = self.dataloader.batch_sampler
            if not isinstance(batch_sampler, ResumableBatchSampler):
                raise RuntimeError('resuming inside an epoch needs train_dataloader.batch_sampler '
                                   "of type 'ResumableBatchSampler'")
            states = self.runner.message_hub.get_info(RNG_KEY)
            if not states or len(states) <= get_rank():
                raise RuntimeError('the in-epoch checkpoint has no RNG state for this rank: '
                                   'resume it with the number of processes that wrote it')
            rng = states[get_rank()]
            batch_sampler.skip_next(done)
            print_log(f'continuing epoch {self._epoch + 1} after its first {done} of '
                      f'{len(self.dataloader)} batches', logger='current')
        # A new loader iterator (every epoch, or the first after a resume with persistent
        # workers) draws its workers' base seed from torch's RNG: keep that draw out of the
        # stream the model samples from.
        batches = iter(self.dataloader)
        restore_rng(rng)
        for idx, data_batch in enumerate(batches, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
