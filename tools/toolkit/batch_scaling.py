"""What follows the run's total batch (processes x ``train_dataloader.batch_size``): the LR's
scaling rule and schedulers whose length is counted in images. tools/train.py applies both to
the built runner, before training.

**LR rule.** mmengine's ``auto_scale_lr`` scales the LR linearly from ``base_batch_size``.
``auto_scale_lr = dict(..., rule='sqrt')`` scales it by the square root of the batch ratio
instead (the rule argued for adaptive optimizers such as AdamW: Malladi et al. 2022, Granziol
et al. 2022), for a recipe whose source trained at a far larger batch than users run it. A run
at a total batch more than 8x from the base logs a warning with the LR that results.

**Schedulers in images**, so that a warm-up covers the same images at any total batch, as
auto_scale_lr keeps the LR per image. A config switches it on per iteration-based scheduler by giving ``end_images`` instead of
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


LR_RULES = ('linear', 'sqrt')
FAR = 8  # a total batch this many times from the base (either way) gets a warning


def apply_lr_rule(runner) -> None:
    """Turn ``auto_scale_lr.rule`` into the ``base_batch_size`` with which mmengine's linear
    scaling gives the rule's LR, and warn when the run's batch is far from the base."""
    cfg = runner.auto_scale_lr
    if not cfg or not cfg.get('enable', False):
        return
    rule = cfg.pop('rule', 'linear')  # mmengine knows the linear rule only
    if rule not in LR_RULES:
        raise UserError(f'auto_scale_lr.rule={rule!r}: expected one of {", ".join(LR_RULES)}')
    total = runner.world_size * runner.cfg.train_dataloader.batch_size
    base = cfg['base_batch_size']
    if rule == 'sqrt':
        cfg['base_batch_size'] = math.sqrt(total * base)  # total / that = sqrt(total / base)
    factor = total / cfg['base_batch_size']
    if not 1 / FAR <= total / base <= FAR:
        lr = runner.cfg.optim_wrapper.get('optimizer', {}).get('lr')
        runner.logger.warning(
            f'total batch {total} ({runner.world_size} x {runner.cfg.train_dataloader.batch_size}) '
            f'is {total / base:.3g} x the {base} this recipe\'s LR is set for: '
            + (f'lr {lr:g} x {factor:.3g} = {lr * factor:.3g}' if lr else f'LR x {factor:.3g}')
            + f' ({rule} rule; auto_scale_lr.rule chooses it)')
