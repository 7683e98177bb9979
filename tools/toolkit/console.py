"""THE one place where third-party console noise is silenced.

A user's terminal should show progress, ETA, losses, warnings that need action and results.
Everything below is either a dump kept for the record (it still goes to the run's log file,
``<work_dir>/<timestamp>/<timestamp>.log``) or a third-party message that needs no action from
a user of this project. ``set_verbose(True)`` (``--verbose`` in tools/train.py and tools/test.py)
turns it back on, all but the import-time debug line below.

Silenced, with the reason it needs no action:

stdout of imports (``quiet_imports``, which each tool calls first)
  - ``Could not import OneDL. Skipping OneDL datasets.`` (mmdet.datasets and
    mmdet.datasets.transforms) and ``Could not import OneDL`` (mmpretrain.datasets): the OneDL
    fork's optional dataset types, which this project does not use. Meant as DEBUG messages, but
    ``print_log(level=DEBUG)`` without a logger print()s unconditionally.

console handler of the runner's logger (``QuietRunner``; the log file keeps every record)
  - ``System environment: ... Runtime environment: ...``: Runner._log_env's dump (PyTorch build
    flags, CUDA, seeds), ~35 lines.
  - ``Config: ...``: the whole config, ~360 lines; also dumped to the work dir as a .py file.
  - ``Hooks will be executed in the following order: ...``: the hook table, ~90 lines.
  - ``Distributed training is not used, all SyncBatchNorm (SyncBN) layers ... reverted to
    BatchNormXd ...``: logged by every single-process run; the conversion is automatic.
  - ``"FileClient" will be deprecated in future ...`` and ``"HardDiskBackend" is the alias of
    "LocalBackend" ...``: mmengine's CheckpointHook.before_train builds a FileClient it keeps
    for backward compatibility, whatever the config says; nothing to change here.
  - ``The prefix is not set in metric class DumpDetResults.``: tools/test.py --out adds mmdet's
    DumpDetResults, which writes the .pkl and reports no metrics, so it needs no prefix.

Python warnings (``quiet_warnings``; each filter names one message, no blanket ignore)
  - ``Only use 'alpha' for pillow backend.`` (mmcv.image.photometric.adjust_color, once per
    dataloader worker): raised on every saturation jitter with the pillow backend, which is
    mmpretrain ColorJitter's default, used by the MoCo augmentation as configured.
  - ``Warning: The bbox is out of bounds, ...`` and ``Warning: The polygon is out of bounds,
    ...`` (mmengine.visualization.visualizer, when drawing: tools/test.py --show-dir,
    tools/infer.py, tools/browse_dataset.py): raised for every box that touches the right or
    bottom edge (draw_bboxes draws it again as a polygon, hence the second message): mmengine
    wants x < width, and a box clipped to the image ends at x = width. It is drawn all the same.
"""
import contextlib
import io
import logging
import sys
import warnings

from mmengine.logging import MMLogger
from mmengine.runner import Runner

_verbose = False


def set_verbose(flag: bool = True) -> None:
    """Show everything: QuietRunner's console filter and quiet_warnings stand aside (call it
    before them)."""
    global _verbose
    _verbose = bool(flag)


def is_verbose() -> bool:
    return _verbose


# ---------------------------------------------------------------------------------- imports
_IMPORT_NOISE = ('Could not import OneDL', )
_NOISY_MODULES = ('mmdet.datasets', 'mmdet.datasets.transforms', 'mmpretrain.datasets')


class _DropLines(io.TextIOBase):
    """A text stream that passes whole lines on to ``target`` except those starting with one of
    ``prefixes``."""

    def __init__(self, target, prefixes):
        self.target, self.prefixes, self.buf = target, prefixes, ''

    def writable(self):
        return True

    def write(self, s):
        self.buf += s
        *lines, self.buf = self.buf.split('\n')
        for line in lines:
            if not line.startswith(self.prefixes):
                self.target.write(line + '\n')
        return len(s)

    def flush(self):
        # a partial line (no newline yet) is passed on as is: nothing printed is held back
        if self.buf:
            if not self.buf.startswith(self.prefixes):
                self.target.write(self.buf)
            self.buf = ''
        self.target.flush()


def quiet_imports() -> None:
    """Import the upstream modules that print the OneDL line, with that line dropped from
    stdout; later imports of them are silent (Python caches modules). Anything else they print
    still shows. A module that is not installed is skipped; a module imported before is not
    imported again (its line, if any, has been printed already), so the tools call this first,
    before anything imports mmdet (bootstrap.setup; importing custom_modules imports mmdet and
    mmpretrain). Not undone by set_verbose: the line is a DEBUG message that upstream means to
    hide, and the tools call this before they parse --verbose."""
    out = _DropLines(sys.stdout, _IMPORT_NOISE)
    with contextlib.redirect_stdout(out):
        try:
            for name in _NOISY_MODULES:
                try:
                    __import__(name)
                except ImportError:
                    if not name.startswith('mmpretrain'):
                        raise
        finally:
            out.flush()


# --------------------------------------------------------------------------------- warnings
# (message regex, category, module regex): each a known third-party message needing no action
_WARNINGS = (
    (r"Only use 'alpha' for pillow backend\.", UserWarning, r'mmcv\.image\.photometric'),
    (r'Warning: The (bbox|polygon) is out of bounds', UserWarning,
     r'mmengine\.visualization\.visualizer'),
)


def quiet_warnings() -> None:
    """Ignore the Python warnings listed in ``_WARNINGS`` (and the module docstring), and only
    them. Dataloader workers started by fork inherit the filters."""
    if _verbose:
        return
    for message, category, module in _WARNINGS:
        warnings.filterwarnings('ignore', message=message, category=category, module=module)


# ----------------------------------------------------------------------------------- logger
class ConsoleFilter(logging.Filter):
    """Drops the runner's dumps and the known no-action warnings (module docstring). Meant for
    the console handler only: the log file keeps them."""

    # matched against the start of the message, leading newlines and dashes left out
    DUMPS = ('System environment:', 'Config:\n', 'Hooks will be executed in the following order',
             'Distributed training is not used, all SyncBatchNorm')
    WARNINGS = ('"FileClient" will be deprecated in future',
                '"HardDiskBackend" is the alias of "LocalBackend"',
                'The prefix is not set in metric class DumpDetResults.')

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record is for logging to report, not for us to hide
            return True
        head = msg.lstrip('\n-')
        if record.levelno <= logging.INFO and head.startswith(self.DUMPS):
            return False
        if record.levelno == logging.WARNING and head.startswith(self.WARNINGS):
            return False
        return True


def console_handlers(logger: logging.Logger):
    """The handlers writing to a terminal stream: StreamHandlers that are not FileHandlers
    (FileHandler subclasses StreamHandler)."""
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def quiet_console(logger: logging.Logger) -> logging.Logger:
    """Attach ConsoleFilter to ``logger``'s console handler(s), once."""
    for h in console_handlers(logger):
        if not any(isinstance(f, ConsoleFilter) for f in h.filters):
            h.addFilter(ConsoleFilter())
    return logger


class QuietRunner(Runner):
    """mmengine's Runner whose console leaves out the dumps and no-action warnings listed in
    this module's docstring; its log file keeps them. ``QuietRunner.from_cfg(cfg)`` works as
    Runner's (from_cfg builds ``cls(...)``, and the logger is built in __init__ before anything
    is logged)."""

    def build_logger(self, *args, **kwargs) -> MMLogger:
        logger = super().build_logger(*args, **kwargs)
        if not _verbose:
            quiet_console(logger)
        return logger
