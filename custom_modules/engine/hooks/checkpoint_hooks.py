"""Checkpoints the staged schedule keeps: an epoch's weights that outlive max_keep_ckpts, and a
best score carried from one stage to the next."""
import os

from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

from ...fileio.atomic_local import atomic_open


def checkpoint_backend_args(runner):
    """The ``backend_args`` of the runner's CheckpointHook (``default_hooks.checkpoint``; the
    configs choose the crash-safe ``atomic_local`` backend, custom_modules/fileio/atomic_local.py):
    our hooks that save a checkpoint pass them on, so every checkpoint file is written the same
    way.
    None (mmengine's default backend) without a CheckpointHook."""
    return next((h.backend_args for h in runner.hooks if isinstance(h, CheckpointHook)), None)


def read_last_checkpoint(work_dir: str) -> str:
    """The path ``last_checkpoint`` names (mmengine's resume pointer), '' when there is none."""
    try:
        with open(os.path.join(work_dir, 'last_checkpoint')) as f:
            return f.read().strip()
    except OSError:
        return ''


def point_last_checkpoint(work_dir: str, path: str) -> None:
    """Make ``path`` the folder's resume point, written atomically."""
    with atomic_open(os.path.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(path)


@HOOKS.register_module()
class KeepCheckpointHook(Hook):
    """Save a weights-only ``keep_epoch_N.pth`` after each epoch N in ``epochs`` (default: the
    epoch the run stops at), never deleted by CheckpointHook's ``max_keep_ckpts``.

    Unlike a second CheckpointHook it leaves ``last_checkpoint`` alone, so a resume never lands
    on a file without optimizer and scheduler state. It saves before CheckpointHook: a job killed
    between the two saves has not finished (no ``epoch_N.pth``) and trains epoch N again, rather
    than ending without the file the next stage starts from.
    """

    priority = 'LOW'  # after the LR scheduler's epoch step, before CheckpointHook (VERY_LOW)

    def __init__(self, epochs=None):
        self.epochs = None if epochs is None else set(epochs)

    def after_train_epoch(self, runner) -> None:
        epoch = runner.epoch + 1
        if epoch in (self.epochs if self.epochs is not None else {runner.max_epochs}):
            runner.save_checkpoint(runner.work_dir, f'keep_epoch_{epoch}.pth',
                                   save_optimizer=False, save_param_scheduler=False,
                                   backend_args=checkpoint_backend_args(runner))


@HOOKS.register_module()
class OwnBestCheckpointHook(Hook):
    """A stage that continues the previous stage's checkpoint inherits its best score (so its
    own best file is written only when it beats the earlier stages) but not the path of its best
    file, which CheckpointHook would delete from the previous stage's folder."""

    def after_load_checkpoint(self, runner, checkpoint) -> None:
        hub = checkpoint.get('message_hub', {})
        info = hub.get('runtime_info', {})
        own = os.path.abspath(runner.work_dir) + os.sep
        for key in [k for k in info if k.startswith('best_ckpt')]:
            if not os.path.abspath(str(info[key])).startswith(own):
                del info[key]
                hub.get('resumed_keys', {}).pop(key, None)
