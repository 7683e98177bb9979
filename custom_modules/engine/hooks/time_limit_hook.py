"""Stop before a time limit, save a resume point, requeue.

:class:`TimeLimitHook`: on SIGUSR1 (``sbatch --signal=USR1@SECONDS``) every rank stops after the
current iteration, rank 0 saves a resumable ``iter_N.pth`` and requeues the Slurm job; on SIGTERM
(preemption, ``scancel``, ``scontrol requeue``) the same save, and Slurm decides about the
requeue. It also saves ``iter_N.pth`` every ``save_every_minutes`` inside an epoch, for the faults
that send no signal (``kill -9``, a node that dies). Epoch- and iteration-based loops alike.
"""
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from time import monotonic

import torch
import torch.distributed as dist
from mmengine.dist import all_gather_object, barrier, is_distributed, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

from ..runner.loops import (OLD_VAL_PENDING_KEY, RNG_KEY, VAL_PENDING_KEY, by_iterations,
                            capture_rng, validates_after)
from .checkpoint_hooks import (checkpoint_backend_args, point_last_checkpoint,
                               read_last_checkpoint)

# exit status of a run stopped by TimeLimitHook (EX_TEMPFAIL): the work is not finished, so
# Slurm dependants (afterok) must not start
EXIT_TIME_LIMIT = 75
TRAIN_SBATCH = str(Path(__file__).resolve().parents[3] / 'tools' / 'slurm' / 'train.sbatch')


_stop_requested = 0  # the stop signal received (SIGTERM wins over SIGUSR1), 0 if none


def _request_stop(signum, frame) -> None:
    global _stop_requested
    _stop_requested = max(_stop_requested, signum)


def catch_stop_signals():
    """Turn SIGUSR1 and SIGTERM into stop requests (their default action kills the process);
    return SIGUSR1's previous handler."""
    signal.signal(signal.SIGTERM, _request_stop)
    return signal.signal(signal.SIGUSR1, _request_stop)


class _StopSignalsIgnored:
    """A loader worker's init: SIGUSR1 ignored, SIGTERM from anyone but the main process
    ignored, then the loader's own init. Slurm signals every process of a job, loader workers
    included; PyTorch's workers die of a SIGTERM their parent did not send, and the main process
    then fails on the dead worker instead of saving. The main process stops its workers itself
    (a SIGTERM from it still ends a worker, as in PyTorch)."""

    def __init__(self, init) -> None:
        self.init = init

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        # a Python handler cannot see the sender: block SIGTERM and take it in a thread (threads
        # started later inherit the mask)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=_end_on_parents_sigterm, daemon=True).start()
        if self.init is not None:
            self.init(worker_id)


def _end_on_parents_sigterm() -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == os.getppid():
            os._exit(0)


def _exit_status(signum: int) -> int:
    return EXIT_TIME_LIMIT if signum == signal.SIGUSR1 else 128 + signum


@HOOKS.register_module()
class TimeLimitHook(Hook):
    """Stop cleanly when Slurm announces the time limit (``--signal=USR1@SECONDS``) or ends the
    job (SIGTERM: preemption, ``scancel``; SIGKILL follows after a grace time).

    After the iteration in progress, all ranks agree to stop; rank 0 saves ``iter_N.pth`` with
    optimizer, scheduler and every rank's RNG state and points ``last_checkpoint`` at it. On
    SIGUSR1, inside a Slurm batch job, it then runs ``scontrol requeue`` so the job continues from
    there (at most ``$MAX_RESTARTS`` times, default 10), and the process exits with status 75; on
    SIGTERM Slurm requeues the job itself when it is requeueing it (preemption, ``scontrol
    requeue``), and the process exits with status 143. With gradient accumulation both wait for
    the accumulation's optimizer step.

    A stop during the validation after an epoch (the detection configs' COCO evaluation of the
    whole validation set can outlast the signal's lead) saves the end of that epoch; the resumed
    run validates it first. So does a run resumed from an epoch checkpoint whose validation never
    ended (``kill -9``, a dead node): the epoch's checkpoint is written with the validation marked
    pending, and the last epoch's is written again once its validation has ended, so that a
    finished run reads as finished.

    With an iteration-based loop (``ResumableIterBasedTrainLoop``) every iteration is a place to
    stop, validations are marked the same way at their iterations, and the in-epoch saves are
    timed saves between CheckpointHook's own ``iter_N.pth``, which they leave alone.

    Args:
        save_every_minutes: also save ``iter_N.pth`` (the same resume point, without stopping)
            after the first iteration that ends this long after the last checkpoint, inside an
            epoch; each replaces the one before. None or 0: epoch checkpoints only. Rank 0's
            clock decides, so all ranks save at the same iteration. Configs list this hook third
            in ``custom_hooks``: ``--cfg-options custom_hooks.2.save_every_minutes=10``.
    """

    priority = 'VERY_LOW'  # after the optimizer step, the LR scheduler and CheckpointHook
    _trained = False
    _revalidating = False

    _EARLY = ('SIGUSR1 arrived {when}: the job\'s time limit is shorter than its --signal lead '
              'time, so stopping would gain nothing; training goes on until the limit ends the '
              'job. Give the job more --time or a shorter --signal lead.')

    # 30: a dead node costs at most half an hour (a V100 detection epoch) for a save of seconds
    def __init__(self, save_every_minutes: float | None = 30) -> None:
        self.save_every = 60 * save_every_minutes if save_every_minutes else None
        self._saved_at = 0.0  # rank 0's clock at the last checkpoint
        self._last = ''  # the last checkpoint seen (``last_checkpoint``)
        self._own = ''  # by iterations: the resume point of this hook's that CheckpointHook lacks

    def before_train(self, runner) -> None:
        # tools/train.py's handler from its first line notes a signal that came while it started
        if getattr(catch_stop_signals(), 'arrived', False):
            runner.logger.warning(self._EARLY.format(when='before training started'))
        for loop in (getattr(runner, 'train_loop', None), getattr(runner, 'val_loop', None)):
            loader = getattr(loop, 'dataloader', None)
            if getattr(loader, 'num_workers', 0) and not isinstance(loader.worker_init_fn,
                                                                    _StopSignalsIgnored):
                loader.worker_init_fn = _StopSignalsIgnored(loader.worker_init_fn)
        self._trained = False
        self._saved_at = monotonic()  # the run starts from its last checkpoint (or nothing)
        self._last = read_last_checkpoint(runner.work_dir)
        # by iterations, the stop's or timed save's file a restart resumes from is this hook's
        # to drop once CheckpointHook has saved past it
        self._own = (self._last if by_iterations(runner.train_loop) and self._last
                     and os.path.dirname(os.path.abspath(self._last))
                     == os.path.abspath(runner.work_dir)
                     and not _checkpoint_hook_saves(runner, self._last) else '')
        old = getattr(runner.message_hub, 'runtime_info', {}).pop(OLD_VAL_PENDING_KEY, None)
        if old is not None:
            runner.message_hub.update_info(VAL_PENDING_KEY, old)
        pending = runner.message_hub.get_info(VAL_PENDING_KEY)
        if pending is not None and runner.val_loop is not None:
            what = 'iteration' if by_iterations(runner.train_loop) else 'epoch'
            print_log(f'validating {what} {pending} again: the run stopped before its validation '
                      'ended', logger='current')
            self._revalidating = True
            try:
                runner.val_loop.run()  # after_val_epoch clears the flag
            finally:
                self._revalidating = False
        elif pending is not None:  # no validation configured any more
            runner.message_hub.update_info(VAL_PENDING_KEY, None)

    def after_train(self, runner) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if _stop_requested == signal.SIGTERM:  # came after the last iteration: end now
            raise SystemExit(_exit_status(signal.SIGTERM))

    def _agreed(self) -> tuple[int, bool]:
        """(the stop signal any rank received or 0, whether rank 0 finds a timed save due), the
        same on every rank: one all_reduce per iteration carries both."""
        due = (self.save_every is not None and is_main_process()
               and monotonic() - self._saved_at >= self.save_every)
        flag = torch.tensor([_stop_requested, int(due)], dtype=torch.int32)
        if is_distributed():
            if dist.get_backend() == 'nccl':
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag[0]), bool(flag[1])

    def before_train_epoch(self, runner) -> None:
        signum = self._agreed()[0]
        if not signum or self._trained and _gradients_pending(runner):
            return
        if not self._trained:
            if signum == signal.SIGTERM:  # nothing trained since the checkpoint it resumed
                raise SystemExit(_exit_status(signum))
            # a requeue now would restart into the same signal, again and again
            global _stop_requested
            _stop_requested = 0
            runner.logger.warning(self._EARLY.format(
                when='before this run trained an iteration'))
            return
        self._stop(runner, signum, epoch=runner.epoch, iter_=runner.iter)

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        # by iterations, CheckpointHook saves in after_train_iter, before this hook's turn: the
        # flag must be set when the iteration starts to be in that checkpoint
        if by_iterations(runner.train_loop) and validates_after(runner.train_loop,
                                                                runner.iter + 1):
            runner.message_hub.update_info(VAL_PENDING_KEY, runner.iter + 1)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._trained = True
        if (self._own and is_main_process()
                and read_last_checkpoint(runner.work_dir) != self._own):  # CheckpointHook saved
            _remove(self._own)
            self._own = ''
        # after an epoch's last batch, stop in the next before_train_epoch instead: the epoch's
        # scheduler step, checkpoint and validation come first
        if by_iterations(runner.train_loop) or batch_idx + 1 < len(runner.train_dataloader):
            signum, due = self._agreed()
            if (signum or due) and _gradients_pending(runner):
                return  # the optimizer step of this accumulation comes first
            if signum:
                self._stop(runner, signum, epoch=runner.epoch, iter_=runner.iter + 1)
            elif due:
                path = self._save(runner, epoch=runner.epoch, iter_=runner.iter + 1)
                runner.logger.info(f'in-epoch checkpoint {path} (every '
                                   f'{self.save_every / 60:g} minutes)')
        elif validates_after(runner.train_loop, runner.epoch + 1):
            # in the epoch checkpoint written next, before the validation: a run killed during
            # it (no signal, no save) resumes from that checkpoint and validates the epoch again
            runner.message_hub.update_info(VAL_PENDING_KEY, runner.epoch + 1)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        # every rank runs as many validation iterations (DefaultSampler pads them to the same
        # number of samples), so they meet in this all_reduce
        if not self._trained:  # not inside training (tools/test.py) or its first validation
            return
        signum = self._agreed()[0]
        if signum and not _gradients_pending(runner):
            runner.message_hub.update_info(VAL_PENDING_KEY, runner.iter if by_iterations(
                runner.train_loop) else runner.epoch)
            self._stop(runner, signum, epoch=runner.epoch, iter_=runner.iter)

    def after_val_epoch(self, runner, metrics=None) -> None:
        """The epoch's validation ended: no longer pending. After the last epoch nothing saves
        again, so its checkpoint is written again without the flag (else the run would never
        read as finished)."""
        pending = runner.message_hub.get_info(VAL_PENDING_KEY)
        if pending is None or not (self._trained or self._revalidating):
            return  # not inside training (tools/test.py)
        runner.message_hub.update_info(VAL_PENDING_KEY, None)
        loop = runner.train_loop
        if by_iterations(loop):
            if runner.iter >= loop.max_iters:
                self._write(runner, f'iter_{runner.iter}.pth', runner.epoch, runner.iter)
        elif runner.epoch >= loop.max_epochs:
            self._write(runner, f'epoch_{runner.epoch}.pth', runner.epoch, runner.iter)

    def after_train_epoch(self, runner) -> None:
        """Drop in-epoch checkpoints once an epoch checkpoint supersedes them; the time to the
        next timed save counts from a new checkpoint."""
        if not is_main_process():
            return
        last = read_last_checkpoint(runner.work_dir)
        if last != self._last:
            self._last, self._saved_at = last, monotonic()
        if not last or os.path.basename(last).startswith('iter_'):
            return
        _remove_iter_checkpoints(runner.work_dir)

    def _save(self, runner, epoch: int, iter_: int) -> str:
        """Save the resume point ``iter_N.pth`` (every rank's RNG state included), point
        ``last_checkpoint`` at it and drop the older in-epoch ones; return its path."""
        runner.message_hub.update_info(RNG_KEY, all_gather_object(capture_rng()))
        return self._write(runner, f'iter_{iter_}.pth', epoch, iter_)

    def _write(self, runner, name: str, epoch: int, iter_: int) -> str:
        """Save ``name`` with the training state, make it the resume point and drop the
        in-epoch checkpoints it supersedes; return its path."""
        path = os.path.join(runner.work_dir, name)
        runner.save_checkpoint(runner.work_dir, name, meta=dict(epoch=epoch, iter=iter_),
                               by_epoch=False, backend_args=checkpoint_backend_args(runner))
        if is_main_process():
            point_last_checkpoint(runner.work_dir, path)
            if not by_iterations(runner.train_loop):
                _remove_iter_checkpoints(runner.work_dir, keep=name)
            else:  # CheckpointHook's iter_N.pth are its own to keep or drop
                if self._own != path:
                    _remove(self._own)
                self._own = '' if _checkpoint_hook_saves(runner, path) else path
            self._last, self._saved_at = path, monotonic()
        return path

    def _stop(self, runner, signum: int, epoch: int, iter_: int) -> None:
        path = self._save(runner, epoch, iter_)
        # a SIGTERM during the save (scancel, preemption) wins: no requeue, its exit status
        signum = max(signum, _stop_requested)
        if is_main_process():
            why = ('SIGUSR1, e.g. the Slurm time limit is near' if signum == signal.SIGUSR1
                   else 'SIGTERM: preemption, scancel or a requeue')
            runner.logger.warning(f'stop requested ({why}): saved {path} at epoch {epoch + 1}, '
                                  f'iteration {iter_}')
            if signum == signal.SIGUSR1:
                _requeue(runner)
        barrier()
        raise SystemExit(_exit_status(signum))


def _gradients_pending(runner) -> bool:
    """Whether the iterations since the last optimizer step left accumulated gradients
    (``accumulative_counts``), which no checkpoint holds: a resume point saved now would not
    replay the run, so stops and timed saves wait for the step. Every rank counts alike."""
    wrapper = runner.optim_wrapper
    wrappers = wrapper.values() if isinstance(wrapper, OptimWrapperDict) else [wrapper]
    return not all(w.should_update() for w in wrappers)


def _remove(path: str) -> None:
    if path and os.path.exists(path):
        os.remove(path)


def _checkpoint_hook_saves(runner, path: str) -> bool:
    """Whether CheckpointHook (by iterations) writes ``path``, an ``iter_N.pth``, itself: at its
    interval or the last iteration. Those are its to keep or drop (``max_keep_ckpts``)."""
    found = re.fullmatch(r'iter_(\d+)\.pth', os.path.basename(path))
    hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
    if not found or hook is None:
        return False
    n = int(found.group(1))
    return (hook.interval > 0 and n % hook.interval == 0) or n >= runner.train_loop.max_iters


def _remove_iter_checkpoints(work_dir: str, keep: str = '') -> None:
    for name in os.listdir(work_dir):
        if name.startswith('iter_') and name.endswith('.pth') and name != keep:
            os.remove(os.path.join(work_dir, name))


def _continuation() -> str:
    """The one command that continues this job from its saved checkpoint, as train.sbatch
    prints it for a failed job: the chain's resubmission for a pipeline stage
    (``PIPELINE_RESUBMIT``, exported by submit_pipeline.sh), else the job submitted again."""
    chain = os.environ.get('PIPELINE_RESUBMIT')
    if chain:
        return ('Continue the chain from it (finished stages are skipped, the jobs waiting '
                f'behind this one replaced): {chain}')
    argv = sys.argv
    # train.sbatch CONFIG ARGS runs `train.py CONFIG --resume ARGS --launcher slurm` (a value
    # after that --resume is the user's own `--resume PATH`: train.py has one positional)
    if (len(argv) >= 5 and argv[2] == '--resume' and argv[3].startswith('-')
            and argv[-2:] == ['--launcher', 'slurm']):
        # an explicit `--resume PATH` left in would roll the new job back to PATH again
        return ('Continue it from its latest checkpoint: submit it again, with the same sbatch '
                f'options, from {os.environ.get("SLURM_SUBMIT_DIR") or os.getcwd()}: sbatch ... '
                + shlex.join([TRAIN_SBATCH, argv[1], *_without_explicit_resume(argv[3:-2])[0]]))
    explicit = _without_explicit_resume(argv[2:])[1]
    if explicit:
        return ('Continue it from its latest checkpoint: run the same command again with '
                f'--resume in place of {" ".join(explicit)} (which would roll it back again).')
    return 'Continue it from its latest checkpoint: run the same command again with --resume.'


def _without_explicit_resume(args: list) -> tuple[list, list]:
    """(``args`` less every ``--resume`` and its PATH, the explicit ``--resume PATH`` found)."""
    kept, explicit, after_resume = [], [], False
    for arg in args:
        if after_resume and not arg.startswith('-'):
            explicit = ['--resume', arg]
        elif arg.startswith('--resume='):
            explicit = [arg]
        elif arg != '--resume':
            kept.append(arg)
        after_resume = arg == '--resume'
    return kept, explicit


def _requeue(runner) -> None:
    job = os.environ.get('SLURM_JOB_ID')
    if not job:
        runner.logger.warning('not a Slurm job: continue with the same command and --resume')
        return
    restarts = int(os.environ.get('SLURM_RESTART_COUNT') or 0)
    limit = int(os.environ.get('MAX_RESTARTS') or 10)
    if restarts >= limit:
        runner.logger.error(
            f'job {job} already restarted {restarts} times (MAX_RESTARTS={limit}): not requeued '
            'again; the job fails, and its last log lines say what continues it.')
        return
    if _stop_requested == signal.SIGTERM:
        # scancel or a preemption since the time-limit signal: Slurm requeues a completing job
        # on request, which would bring a cancelled job back
        runner.logger.warning(f'SIGTERM arrived while saving: job {job} not requeued (Slurm '
                              'requeues it itself when it is preempting it)')
        return
    r = subprocess.run(['scontrol', 'requeue', job], capture_output=True, text=True)
    if r.returncode:
        runner.logger.error(f'scontrol requeue {job} failed ({r.stderr.strip()}): the job ends '
                            f'here with exit status {EXIT_TIME_LIMIT}. {_continuation()}')
    else:
        runner.logger.warning(f'requeued job {job} (restart {restarts + 1} of at most {limit})')
