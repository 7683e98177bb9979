"""Mistakes a user can fix, reported by the tools as one line.

The checks here, and the other checks the tools run before building the runner, raise
:class:`UserError`; ``run_tool`` prints it as ``error: ...`` (the message names the fix) and
exits with status 2: no traceback, no config dump before it.
"""
import os
import os.path as osp
import sys

import torch


class UserError(ValueError):
    pass


def run_tool(main, argv=None):
    try:
        return main(argv)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        sys.exit(2)


def check_amp(amp: bool) -> None:
    if amp and not torch.cuda.is_available():
        raise UserError('--amp (mixed precision) needs a CUDA GPU and none is visible here: '
                        'run without --amp')


def _split_folders(root: str) -> str:
    found = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
    return ', '.join(found) if found else 'none'


def check_data_folders(cfg, names=('train_dataloader', 'val_dataloader', 'test_dataloader'),
                       flag: str = '--data-root') -> None:
    """Every dataset the run will read exists: the data folder, and for the labeled layout its
    split folder (``<data_root>/<split>``)."""
    for name in names:
        loader = cfg.get(name)
        if not loader:
            continue
        ds = loader['dataset']
        root = ds.get('data_root')
        if not root or not osp.isdir(root):
            raise UserError(f'data folder {root!r} ({name}) does not exist: give the dataset '
                            f'with {flag} DIR')
        split = ds.get('split')
        if split and not osp.isdir(osp.join(root, split)):
            raise UserError(f'{root} has no split folder {split!r} (it has: '
                            f'{_split_folders(root)}): pass --split with one of those')
