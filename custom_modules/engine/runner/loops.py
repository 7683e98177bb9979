"""A training loop that resumes inside an epoch and replays exactly.

:class:`ResumableEpochBasedTrainLoop` resumes from a checkpoint saved inside an epoch (by
``TimeLimitHook``): it skips the batches already trained (indices only, no image is read) and
restores every rank's RNG.
"""
import bisect
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.logging import print_log
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop

from ...datasets.samplers import ResumableBatchSampler
from ...errors import UserError

RNG_KEY = 'rng_states'  # message hub entry: each rank's RNG state at an in-epoch checkpoint
# message hub entry: the epoch whose validation has not ended (set before the epoch's checkpoint,
# cleared once it ends), to run after a resume. Not 'val...': mmengine's log processor prints
# every runtime entry named so on each validation's log line.
VAL_PENDING_KEY = 'pending_validation'
# its name in checkpoints written before (set only by a stop during validation)
OLD_VAL_PENDING_KEY = 'validation_pending'
# message hub entry: [the iteration counter when the epoch in progress began, its batches]; a
# resume with another number of batches per epoch (processes, batch size) counts from there
EPOCH_START_KEY = 'epoch_start'


def validates_after(loop, epoch: int) -> bool:
    """Whether mmengine's ``EpochBasedTrainLoop.run`` validates once ``epoch`` epochs are done
    (its val_begin, val_interval, dynamic_intervals and last epoch)."""
    if (not hasattr(loop, 'max_epochs') or getattr(loop.runner, 'val_loop', None) is None
            or epoch < loop.val_begin):
        return False  # an iteration-based loop, or no validation
    interval = loop.dynamic_intervals[bisect.bisect(loop.dynamic_milestones, epoch + 1) - 1]
    return epoch % interval == 0 or epoch == loop.max_epochs


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

    The iteration counter at the start of each epoch and the epoch's number of batches are
    saved with every checkpoint, so a checkpoint says how many batches of its epoch were
    trained; those are skipped and each rank's RNG is set back to its state at the save. At an
    epoch's end the run may go on with another number of batches per epoch (another number of
    processes, with ``--allow-input-change``); inside an epoch it may not. Needs
    :class:`ResumableBatchSampler` as the batch sampler.
    """

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        batches = len(self.dataloader)
        hub = self.runner.message_hub
        start, saved = hub.get_info(EPOCH_START_KEY) or (self._epoch * batches, batches)
        done = self._iter - start
        if done == saved:  # that epoch ended: this one starts
            done = 0
        if not 0 <= done < saved:
            raise RuntimeError(
                f'the checkpoint was saved at iteration {self._iter} of epoch {self._epoch + 1}, '
                f'which does not fit {saved} batches per epoch: the dataset, batch size or '
                'number of GPUs changed since it was written')
        if done and saved != batches:
            raise UserError(
                f'the checkpoint was saved inside epoch {self._epoch + 1}, after {done} of its '
                f'{saved} batches, but this run has {batches} batches per epoch (another number '
                'of processes, batch size or dataset): those batches cannot be told apart. '
                'Resume from an epoch\'s checkpoint (--resume epoch_N.pth), or with the '
                'settings that wrote it.')
        hub.update_info(EPOCH_START_KEY, [self._iter - done, batches])
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
