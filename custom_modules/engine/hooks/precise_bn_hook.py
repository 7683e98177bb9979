"""Precise BatchNorm statistics before each evaluation, as the MoCo and DenseCL detection
benchmarks run (detectron2's ``TEST.PRECISE_BN``; Wu & Johnson, "Rethinking Batch in BatchNorm").

During training the running statistics are an exponential average over batches seen by weights
that kept changing; this recomputes them with the weights of the end of the epoch: the mean,
over a number of training batches, of each BatchNorm layer's batch mean and (unbiased) batch
variance, the forward being the training one (``mode='loss'``: the RoI head's BatchNorm sees the
sampled training RoIs, as in detectron2), in the training's precision (the optimizer wrapper's
context: autocast under ``--amp``). mmpretrain's ``PreciseBNHook`` does not fit here: it
sizes its run from ``loader.batch_size`` (None under our batch sampler) and runs the
``'tensor'`` forward.
"""
import itertools

import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def update_bn_stats(model, loader, num_iters: int) -> int:
    """Set the running statistics of every BatchNorm layer in training mode to the mean of its
    batch statistics over the first ``num_iters`` batches of ``loader`` (fewer if it has fewer),
    averaged over the processes (identical already under synchronized BN). Returns the number of
    batches used."""
    model = model.module if is_model_wrapper(model) else model
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training]
    if not bns:
        return 0
    momenta = [bn.momentum for bn in bns]
    means = [torch.zeros_like(bn.running_mean) for bn in bns]
    variances = [torch.zeros_like(bn.running_var) for bn in bns]
    for bn in bns:
        bn.momentum = 1.0  # the running statistics become this batch's
    used = 0
    for data in itertools.islice(loader, num_iters):
        model(**model.data_preprocessor(data, True), mode='loss')
        used += 1
        for bn, mean, var in zip(bns, means, variances):
            mean += bn.running_mean
            var += bn.running_var
    for bn, mean, var, momentum in zip(bns, means, variances, momenta):
        bn.momentum = momentum
        if used:
            for total, running in ((mean, bn.running_mean), (var, bn.running_var)):
                total /= used
                all_reduce(total, op='mean')  # in place; nothing to do on one process
                running.copy_(total)
    return used


@HOOKS.register_module()
class PreciseBNHook(Hook):
    """Recompute the BatchNorm statistics (:func:`update_bn_stats`) over ``num_iters`` training
    batches after every training epoch, before its validation and before its checkpoint is
    written (priority above CheckpointHook's), so the evaluated and the saved model both have
    them.

    Args:
        num_iters: batches of the training loader to average over (detectron2's
            ``TEST.PRECISE_BN.NUM_ITER``, 200).
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, num_iters: int = 200) -> None:
        if num_iters < 1:
            raise ValueError(f'num_iters must be at least 1, not {num_iters}')
        self.num_iters = num_iters

    def after_train_epoch(self, runner) -> None:
        with runner.optim_wrapper.optim_context(runner.model):
            used = update_bn_stats(runner.model, runner.train_loop.dataloader, self.num_iters)
        print_log(f'precise BN: statistics recomputed over {used} training batches',
                  logger='current')
