"""Which checkpoint a training run continues from, and when it must refuse to.

- Only a checkpoint with model, optimizer and LR-scheduler state and its epoch/iteration is a
  resume point: weights-only copies such as ``keep_epoch_100.pth`` never are.
- A work folder records what produced it (``run_inputs.json``: the training config as run, the
  initial checkpoints' paths and SHA-256, the data folders (a squashfs image also by its size and
  superblock digest), the number of processes). Resuming with other inputs stops with a message
  naming each difference, unless asked for explicitly.
- An explicit ``--resume PATH`` wins over the automatic choice and becomes the folder's
  ``last_checkpoint``: a Slurm job restarted (time limit, preemption) before the continued run
  saved continues PATH, not a newer checkpoint of a run the user rolled back from. The folder
  notes which job took PATH (``explicit_resume.json``): a restart of that job continues its own
  progress since, while a job restarted before it got that far takes PATH as its first start
  would have. When PATH
  lies in the work folder or the folder holds resume points, the inputs are compared with its
  record as for ``--resume``; a checkpoint of another folder starts a fresh folder unchecked
  (the next stage's config differs from the previous stage's by design).
- A new run (no ``--resume``) never starts in a folder that holds resume points: its record and
  checkpoints would mix with the earlier run's. A branch started there from another folder's
  checkpoint that saved nothing leaves none: the new run starts, and drops that start point.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import re
from typing import NamedTuple

import torch
from mmengine.config import Config

from custom_modules.engine.hooks.checkpoint_hooks import (point_last_checkpoint,
                                                          read_last_checkpoint)
from custom_modules.engine.runner.loops import OLD_VAL_PENDING_KEY, VAL_PENDING_KEY
from custom_modules.errors import UserError
from custom_modules.fileio.atomic_local import AtomicLocalBackend
from custom_modules.fileio.sqsh_backend import image_identity, is_sqsh_uri

from .launch import launch_rank

RECORD = 'run_inputs.json'
# which Slurm job took which explicit --resume PATH: its restarts continue from there
EXPLICIT = 'explicit_resume.json'
# Fields that cannot change what is trained: logging, evaluation, checkpoint cadence, loader
# workers (samples are seeded by index: custom_modules/datasets/samplers.py), where the run stops
# (train_cfg.max_epochs or max_iters: continuing a schedule further is the same run) and launch
# details.
_IGNORED = ('work_dir', 'resume', 'load_from', 'launcher', 'env_cfg', 'model_wrapper_cfg',
            'custom_imports', 'train_cfg.max_epochs', 'train_cfg.max_iters', 'log_level',
            'log_processor',
            'visualizer', 'default_hooks.logger', 'default_hooks.checkpoint',
            'default_hooks.timer', 'default_hooks.visualization', 'val_dataloader',
            'val_evaluator', 'val_cfg', 'test_dataloader', 'test_evaluator', 'test_cfg',
            'train_dataloader.num_workers', 'train_dataloader.persistent_workers',
            'train_dataloader.pin_memory', 'train_dataloader.prefetch_factor')
_PATH_KEYS = ('data_root', 'checkpoint', 'load_from', 'ann_file')
_FILE_KEYS = ('checkpoint', 'load_from', 'ann_file')


class ChangedInputsError(UserError):
    """``work_dir`` holds a run trained from other inputs: ``diffs``, one line each."""

    def __init__(self, message: str, work_dir: str, diffs: list[str]):
        super().__init__(message)
        self.work_dir, self.diffs = work_dir, diffs


def schedule_end(cfg: Config) -> tuple[str, int]:
    """('epoch', max_epochs) or, for a schedule counted in iterations, ('iter', max_iters): where
    a run of ``cfg`` ends, in the checkpoint metadata's terms."""
    train_cfg = cfg.train_cfg
    if 'max_iters' in train_cfg:
        return 'iter', train_cfg.max_iters
    return 'epoch', train_cfg.max_epochs


def read_checkpoint_meta(path: str) -> tuple[dict | None, str]:
    """(meta, '') for a resume point, else (None, why not). ``meta`` also holds
    ``VAL_PENDING_KEY``: the epoch whose validation had not ended when it was saved, or None."""
    try:
        ckpt = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
    except Exception as e:  # a truncated or foreign file is not a resume point
        return None, f'unreadable ({type(e).__name__}: {e})'
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('meta'), dict):
        return None, 'no training metadata (not written by tools/train.py)'
    missing = [k for k in ('state_dict', 'optimizer', 'param_schedulers', 'message_hub')
               if k not in ckpt]
    if missing or not {'epoch', 'iter'} <= set(ckpt['meta']):
        return None, f'no {", ".join(missing) or "epoch/iteration"} state (a weights-only copy)'
    info = ckpt['message_hub'].get('runtime_info', {}) if isinstance(ckpt['message_hub'],
                                                                      dict) else {}
    pending = info.get(VAL_PENDING_KEY, info.get(OLD_VAL_PENDING_KEY))
    return dict(ckpt['meta'], **{VAL_PENDING_KEY: pending}), ''


def latest_resume_point(work_dir: str) -> str | None:
    """The resume point ``last_checkpoint`` names or, when that file is missing, empty or names a
    file that is gone or not a resume point, the ``epoch_N`` / ``iter_N`` checkpoint with the
    highest iteration."""
    return _latest_resume_point(work_dir)[0]


def _latest_resume_point(work_dir: str) -> tuple[str | None, dict | None]:
    """(path, meta) of :func:`latest_resume_point`: each candidate file is read once."""
    path = read_last_checkpoint(work_dir)
    meta = read_checkpoint_meta(path)[0] if path and osp.isfile(path) else None
    if meta is not None:
        return path, meta
    return _newest_in(work_dir)


def _newest_in(work_dir: str) -> tuple[str | None, dict | None]:
    """(path, meta) of the folder's own ``epoch_N`` / ``iter_N`` resume point with the highest
    iteration, whatever ``last_checkpoint`` says."""
    found = []
    for name in (os.listdir(work_dir) if osp.isdir(work_dir) else []):
        if re.fullmatch(r'(epoch|iter)_\d+\.pth', name):
            meta, _ = read_checkpoint_meta(osp.join(work_dir, name))
            if meta is not None:
                found.append((meta['iter'], meta['epoch'], osp.join(work_dir, name), meta))
    return max(found, key=lambda f: f[:3])[2:] if found else (None, None)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            h.update(block)
    return h.hexdigest()


def _flatten(obj, prefix: str, out: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f'{prefix}.{k}' if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in obj):
        for i, v in enumerate(obj):
            _flatten(v, f'{prefix}.{i}', out)
    else:
        out[prefix] = obj


# when to save, not what is trained: TimeLimitHook's in-epoch checkpoint interval
_IGNORED_LAST = ('save_every_minutes', )


def _ignored(key: str) -> bool:
    return (any(key == p or key.startswith(p + '.') for p in _IGNORED)
            or key.rsplit('.', 1)[-1] in _IGNORED_LAST)


# the digest of a checkpoint that a job queued before this one is yet to write: a new file, so
# not the one a folder's record names (a submit-time check compares it as a difference)
NOT_WRITTEN = '<not written yet: a job queued before this one writes it>'


def run_inputs(cfg: Config, planned: tuple = ()) -> dict:
    """What determines a training run, as flat ``key: text`` pairs (see the module doc).
    ``planned``: checkpoint paths that do not exist yet because a job queued before this one
    writes them (a check before the jobs are queued); they count with their path and
    ``NOT_WRITTEN`` for their content."""
    planned = {osp.abspath(p) for p in planned}
    flat = {}
    _flatten(cfg.to_dict(), '', flat)
    flat['load_from'] = cfg.get('load_from')
    inputs = {}
    for key, value in flat.items():
        top_scalar = '.' not in key and not isinstance(cfg.get(key), (dict, list, tuple))
        if key != 'load_from' and (_ignored(key) or (top_scalar and key != 'default_scope')):
            continue  # a top-level variable is also in the fields it was substituted into
        last = key.rsplit('.', 1)[-1]
        if last in _PATH_KEYS and isinstance(value, str) and '://' not in value:
            value = osp.abspath(value) if value else value
            if last in _FILE_KEYS and osp.isfile(value):
                inputs[f'{key} (sha256)'] = _sha256(value)
            elif value in planned:
                inputs[f'{key} (sha256)'] = NOT_WRITTEN
            elif last == 'checkpoint':
                continue  # unset (--pretrained not repeated): a resumed run does not read it
        elif last == 'data_root' and is_sqsh_uri(value):
            inputs[f'{key} (image)'] = image_identity(value)
        inputs[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    inputs['world_size'] = int(os.environ.get('WORLD_SIZE') or os.environ.get('SLURM_NTASKS') or 1)
    return inputs


def _read_record(work_dir: str) -> dict | None:
    try:
        with open(osp.join(work_dir, RECORD)) as f:
            return json.load(f)['inputs']
    except (OSError, ValueError, KeyError):
        return None


def write_record(work_dir: str, inputs: dict) -> None:
    """Rank 0 writes (atomically) what this work folder is being trained from."""
    if launch_rank() != 0:
        return
    AtomicLocalBackend().put_text(json.dumps(dict(inputs=inputs), indent=1, sort_keys=True),
                                  osp.join(work_dir, RECORD))


def differences(recorded: dict, current: dict) -> list[str]:
    out = []
    for key in sorted(set(recorded) | set(current)):
        if key.endswith('(sha256)') and (key not in recorded or key not in current):
            continue  # the file is gone (or was not there at the start): its path still counts
        if key.endswith('.checkpoint') and key not in current:
            continue  # not given this time
        if recorded.get(key, '<absent>') != current.get(key, '<absent>'):
            out.append(f'{key}: {recorded.get(key, "<absent>")!r} -> '
                       f'{current.get(key, "<absent>")!r}')
    return out


def _point_last_checkpoint(work_dir: str, path: str) -> None:
    """Rank 0 makes ``path`` the folder's latest resume point, as CheckpointHook does when it
    saves."""
    if launch_rank() == 0:
        point_last_checkpoint(work_dir, path)


def _job() -> str:
    return os.environ.get('SLURM_JOB_ID', '')


def _note_explicit(work_dir: str, path: str) -> None:
    """Rank 0 notes that this job took ``--resume path``, after ``last_checkpoint`` names it: a
    restart in between takes ``path`` again, which is the same."""
    if launch_rank() == 0:
        AtomicLocalBackend().put_text(json.dumps(dict(job=_job(), resume=osp.abspath(path))),
                                      osp.join(work_dir, EXPLICIT))


def _taken_by_this_job(work_dir: str, path: str) -> bool:
    """Whether this job (its first start or an earlier restart) already took ``--resume path``:
    the checkpoints since are its own progress. A job requeued before that decides as its first
    start would have."""
    try:
        with open(osp.join(work_dir, EXPLICIT)) as f:
            noted = json.load(f)
    except (OSError, ValueError):
        return False
    return noted == dict(job=_job(), resume=osp.abspath(path))


def _lr_note(diffs: list[str]) -> str:
    # mmengine scales the optimizer's LR (auto_scale_lr) before it loads the resumed optimizer
    # and scheduler state, which puts the saved LR back
    if not any(d.startswith('world_size:') for d in diffs):
        return ''
    return ('\nWith another number of processes the learning rate stays the one saved in the '
            'checkpoint: auto_scale_lr does not rescale a resumed run.')


def _compare_record(work_dir: str, own: str, inputs: dict, allow_input_change: bool) -> list[str]:
    """How ``inputs`` differ from the record of the run that wrote ``own``; ChangedInputsError
    when they do and that is not allowed."""
    recorded = _read_record(work_dir)
    diffs = (differences(recorded, inputs) if recorded is not None
             else [f'{RECORD}: missing (no record of what trained this folder)'])
    if diffs and not allow_input_change:
        raise ChangedInputsError(
            f'{work_dir} holds a run trained from other inputs than this command gives; '
            'not resuming it:\n  ' + '\n  '.join(diffs[:20])
            + (f'\n  ... ({len(diffs)} differences)' if len(diffs) > 20 else '')
            + f'\nEither train into a new folder (--work-dir NEW_DIR) or continue {own} '
            'with the new inputs (--allow-input-change).' + _lr_note(diffs), work_dir, diffs)
    return diffs


def _changed_inputs(diffs: list) -> str:
    """The tail of a resume message: the inputs allowed to differ, if any."""
    return ' with other inputs:\n  ' + '\n  '.join(diffs) + _lr_note(diffs) if diffs else ''


def _inside(path: str, folder: str) -> bool:
    return osp.dirname(osp.realpath(path)) == osp.realpath(folder)


class Decision(NamedTuple):
    """What :func:`resolve_resume` decided: ``message`` for the log; ``meta``, the metadata of
    the checkpoint the run continues (None for a new run), read once."""
    message: str
    meta: dict | None = None


def _resume_from(cfg: Config, path: str, meta: dict, message: str) -> Decision:
    cfg.resume, cfg.load_from = True, path
    # the data order and per-sample seeds come from the seed the run started with
    cfg.setdefault('randomness', {})['seed'] = meta.get('seed', cfg.randomness.get('seed'))
    return Decision(message, meta)


def resolve_resume(cfg: Config, resume: str | None, inputs: dict,
                   allow_input_change: bool = False, restarted: bool = False) -> Decision:
    """Set ``cfg.resume`` / ``cfg.load_from`` and write the work folder's record. ``resume`` is
    None (no flag), 'auto' (``--resume``) or a path."""
    work_dir = cfg.work_dir
    own, own_meta = _latest_resume_point(work_dir)
    if resume and resume != 'auto' and not (
            restarted and own and _taken_by_this_job(work_dir, resume)):
        meta, why = read_checkpoint_meta(resume)
        if meta is None:
            raise UserError(f'--resume {resume}: not a resume point: {why}. Resume from an '
                             'epoch_N.pth / iter_N.pth written by tools/train.py; a weights-only '
                             'file initializes a run with --pretrained or load_from instead.')
        diffs = []
        # a rollback inside the folder, or a start over the folder's own run, continues or
        # replaces that run: as for --resume, only from the inputs it was trained from. A
        # checkpoint of another folder into a fresh one (the next stage, a branch) starts a run
        # whose config may differ by design.
        if own or _inside(resume, work_dir):
            diffs = _compare_record(work_dir, resume, inputs, allow_input_change)
        write_record(work_dir, inputs)
        _point_last_checkpoint(work_dir, resume)
        _note_explicit(work_dir, resume)
        return _resume_from(cfg, resume, meta,
                            f'resuming from {resume} (--resume){_changed_inputs(diffs)}')
    if own and (resume or cfg.get('resume')):
        diffs = _compare_record(work_dir, own, inputs, allow_input_change)
        if diffs:
            write_record(work_dir, inputs)
        return _resume_from(cfg, own, own_meta,
                            f'resuming from {own} (latest resume point in {work_dir})'
                            f'{_changed_inputs(diffs)}')
    if cfg.get('resume') and cfg.get('load_from'):  # a stage config continuing the previous one
        meta, why = read_checkpoint_meta(cfg.load_from)
        if meta is None:
            raise UserError(f'the previous stage\'s checkpoint {cfg.load_from} is missing or not '
                             f'a resume point ({why}): train the previous stage first, or give '
                             'its checkpoint with --resume PATH')
        write_record(work_dir, inputs)
        return _resume_from(cfg, cfg.load_from, meta,
                            f'continuing the previous stage from {cfg.load_from}')
    started_elsewhere = bool(own) and not _inside(own, work_dir)
    if started_elsewhere:
        # a branch started here from another folder's checkpoint: only the folder's own resume
        # points would mix with a new run
        own = _newest_in(work_dir)[0]
    if own:
        raise UserError(
            f'{work_dir} holds the resume points of an earlier run (latest: {own}); a new run '
            'there would mix its checkpoints and record with them. Either continue that run '
            '(--resume) or start the new one in a new folder (--work-dir NEW_DIR).')
    if started_elsewhere and launch_rank() == 0:
        # else a restart (--resume) before the new run saves would continue that branch start
        os.remove(osp.join(work_dir, 'last_checkpoint'))
    # never let mmengine pick last_checkpoint by itself: it may name a file that is no resume point
    cfg.resume = False
    write_record(work_dir, inputs)
    return Decision(f'starting a new run in {work_dir}'
                    + (' (nothing to resume there)' if resume else ''))


def check_resume(cfg: Config, inputs: dict, allow_input_change: bool = False) -> Decision:
    """What ``--resume`` would continue in ``cfg.work_dir``, writing nothing (a check before a
    job is queued): ChangedInputsError as :func:`resolve_resume` raises it, else the latest
    resume point as ``cfg.load_from`` with its metadata (None: nothing to resume)."""
    own, meta = _latest_resume_point(cfg.work_dir)
    if own is None:
        return Decision(f'nothing to resume in {cfg.work_dir}')
    _compare_record(cfg.work_dir, own, inputs, allow_input_change)
    cfg.load_from = own
    return Decision(f'would resume from {own}', meta)
