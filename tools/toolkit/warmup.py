"""Scheduler lengths counted in images, so that a warm-up covers the same images at any total
batch, as auto_scale_lr keeps the LR per image.

A config switches it on per iteration-based scheduler by giving ``end_images`` instead of
``end``: ``dict(type='LinearLR', by_epoch=False, begin=0, end_images=16000, ...)``.
tools/train.py turns it into ``end`` in iterations of the run's total batch (processes x
``train_dataloader.batch_size``, the total auto_scale_lr scales by), rounded up: the fewest
iterations that see the images. Outside tools/train.py mmengine refuses the unknown key instead of
training another warm-up. A resumed run keeps the schedule saved in its checkpoint, as it keeps
the LR.
"""
import copy
import math

from custom_modules.errors import UserError


def _entries(schedulers):
    """The scheduler dicts of a ``param_scheduler`` value: one dict, a list of them, or a dict of
    those per optimizer."""
    if isinstance(schedulers, dict) and 'type' not in schedulers:
        for value in schedulers.values():
            yield from _entries(value)
    elif isinstance(schedulers, (list, tuple)):
        for value in schedulers:
            yield from _entries(value)
    elif isinstance(schedulers, dict):
        yield schedulers


def set_ends_from_images(runner) -> None:
    """Give every scheduler of ``runner`` (built, not yet trained) that has ``end_images`` its
    ``end`` in iterations, logging each once."""
    if not any('end_images' in s for s in _entries(runner.param_schedulers)):
        return
    per_process = runner.cfg.train_dataloader.batch_size
    total = runner.world_size * per_process
    schedulers = copy.deepcopy(runner.param_schedulers)  # runner.cfg keeps the config as written
    for s in _entries(schedulers):
        if 'end_images' not in s:
            continue
        if s.get('by_epoch', True) or 'end' in s:
            raise UserError(f'param_scheduler {s["type"]}: end_images is for an iteration-based '
                            'scheduler (by_epoch=False) and replaces end: give one of them')
        images = s.pop('end_images')
        s['end'] = math.ceil(images / total)
        runner.logger.info(
            f'{s["type"]}: {s["end"]} iterations = {s["end"] * total} images at total batch '
            f'{total} ({runner.world_size} x {per_process})'
            + ('' if s['end'] * total == images else f': end_images={images} rounded up'))
    runner.param_schedulers = schedulers
