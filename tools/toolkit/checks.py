"""Checks the tools run before building the runner, so a mistake a user can fix ends in one
``UserError`` line (bootstrap.run) instead of a traceback after the config dump."""

import torch

from custom_modules.errors import UserError


def check_amp(amp) -> None:
    """``amp``: the --amp value (True for test.py's flag); only bfloat16 runs on the CPU."""
    if amp and amp != 'bf16' and not torch.cuda.is_available():
        raise UserError('--amp (mixed precision) needs a CUDA GPU and none is visible here: '
                        'run without --amp (train.py: --amp bf16 runs bfloat16 on the CPU)')


def _split_folders(root: str) -> str:
    from mmengine import fileio
    found = sorted(fileio.list_dir_or_file(root, list_file=False))
    return ', '.join(found) if found else 'none'


def check_data_folders(cfg, names=('train_dataloader', 'val_dataloader', 'test_dataloader'),
                       flag: str = '--data-root') -> None:
    """Every dataset the run will read exists: the data folder, and for the labeled layout its
    split folder (``<data_root>/<split>``). A data root that goes through a squashfs image is
    checked inside the image and set to the ``sqsh://`` path the datasets read."""
    from mmengine import fileio

    from .config_edits import UNLABELED_TYPES, dataloader_datasets
    from .data_source import describe, is_data_path
    for name, ds in [(n, ds) for n in names for ds in dataloader_datasets(cfg, (n,))]:
        which = '--unlabeled' if ds.get('type') in UNLABELED_TYPES else flag
        if ds.get('type') == 'CocoFormatDataset':
            continue  # config_edits.setup_coco checks its annotation file and images
        root = ds.get('data_root')
        if not is_data_path(root):
            raise UserError(f'data folder {root!r} ({name}) does not exist: give the dataset '
                            f'with {which} DIR')
        root = ds['data_root'] = describe(root, which).root
        split = ds.get('split')
        if split and not fileio.isdir(fileio.join_path(root, split)):
            raise UserError(f'{root} has no split folder {split!r} (it has: '
                            f'{_split_folders(root)}): pass --split with one of those')


def check_tensorboard(cfg) -> None:
    """mmengine's TensorboardVisBackend imports tensorboard at its first scalar, after the model
    is built and training has started: fail before that when it is configured but missing."""
    backends = (cfg.get('visualizer') or {}).get('vis_backends') or []
    if not all(isinstance(b, dict) for b in backends):
        # --cfg-options parses "[dict(type=...), ...]" into strings, not dicts
        raise UserError(f'visualizer.vis_backends must be dicts, got {backends}: --cfg-options '
                        'cannot write a list of dicts; add TensorBoard with --tensorboard')
    if any(str(b.get('type', '')).split('.')[-1] == 'TensorboardVisBackend' for b in backends):
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError as e:
            raise UserError('TensorBoard logging (--tensorboard, TensorboardVisBackend) needs the '
                            'tensorboard package, which is not installed: `pip install '
                            'tensorboard` into the environment, or train without it') from e
