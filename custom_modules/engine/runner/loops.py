"""Training loops that resume inside an epoch and replay exactly.

:class:`ResumableEpochBasedTrainLoop` resumes from a checkpoint saved inside an epoch (by
``TimeLimitHook``): it skips the batches already trained (indices only, no image is read) and
restores every rank's RNG. :class:`ResumableIterBasedTrainLoop` does the same for a schedule
counted in iterations (mmdet's semi-supervised configs), from any of its checkpoints.
"""
import bisect
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.logging import print_log
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from ...datasets.samplers import ResumableBatchSampler, hashed_seed, seed_all
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
# message hub entry of the iteration loop: [the pass over the data in progress, the iteration
# counter when it began, its batches]
PASS_KEY = 'data_pass'


def by_iterations(loop) -> bool:
    """Whether the training loop counts its schedule in iterations (mmengine's
    ``IterBasedTrainLoop`` and ours): its whole run is one "epoch" to the hooks."""
    return isinstance(loop, IterBasedTrainLoop)


def validates_after(loop, done: int) -> bool:
    """Whether the training loop validates once ``done`` epochs (an epoch-based loop) or
    iterations (an iteration-based one) are done: mmengine's val_begin, val_interval,
    dynamic_intervals and last epoch or iteration, as its loops decide."""
    if getattr(loop.runner, 'val_loop', None) is None or done < loop.val_begin:
        return False
    last = loop.max_iters if by_iterations(loop) else loop.max_epochs
    interval = loop.dynamic_intervals[bisect.bisect(loop.dynamic_milestones, done + 1) - 1]
    return done % interval == 0 or done == last


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


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's iteration loop, resumable from any of its checkpoints with exact replay.

    The data come in passes over the (finite) sampler: pass ``p`` is the sampler's epoch ``p``,
    so the batches of iteration ``i`` follow from ``i`` alone. A resume starts the pass it falls
    in after the batches already trained (indices only, no image is read). Each iteration
    reseeds Python, NumPy and torch from (seed, iteration, rank): what the model draws (RoI
    sampling, box jitter) depends on no earlier iteration, so a periodic checkpoint, which holds
    no RNG state, resumes as exactly as a time-limit stop, and a validation leaves no trace in
    what follows. Needs
    :class:`ResumableBatchSampler` as the batch sampler; another number of batches per pass
    (processes, batch size) is accepted only where a pass ends.
    """

    def run(self):
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')  # the whole run is one epoch to the hooks
        if not isinstance(self.dataloader.batch_sampler, ResumableBatchSampler):
            raise RuntimeError("ResumableIterBasedTrainLoop needs train_dataloader.batch_sampler "
                               "of type 'ResumableBatchSampler'")
        while self._iter < self._max_iters and not self.stop_training:
            self._run_pass()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model

    def _run_pass(self) -> None:
        batches = len(self.dataloader)
        hub = self.runner.message_hub
        number, start, saved = hub.get_info(PASS_KEY) or (0, 0, batches)
        done = self._iter - start
        if done == saved:  # that pass ended: the next one starts
            number, start, done = number + 1, self._iter, 0
        if done and saved != batches:
            raise UserError(
                f'the checkpoint was saved at iteration {self._iter}, after {done} of the '
                f'{saved} batches of a pass over the data, but this run has {batches} batches per '
                'pass (another number of processes, batch size or dataset): those batches cannot '
                'be told apart. Resume with the settings that wrote it, or from a checkpoint '
                'saved where a pass ended.')
        hub.update_info(PASS_KEY, [number, start, batches])
        sampler = self.dataloader.batch_sampler.sampler
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(number)
        if done:
            self.dataloader.batch_sampler.skip_next(done)
            print_log(f'continuing pass {number + 1} over the data at iteration {self._iter}, '
                      f'after its first {done} of {batches} batches', logger='current')
        for data_batch in self.dataloader:
            self._reseed()
            self.runner.model.train()
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if validates_after(self, self._iter):
                self.runner.val_loop.run()
            if self._iter >= self._max_iters or self.stop_training:
                break

    def _reseed(self) -> None:
        seed = hashed_seed(int(self.runner.seed or 0), 'iteration', self._iter, get_rank())
        seed_all(seed)
