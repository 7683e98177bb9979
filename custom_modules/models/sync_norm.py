"""SyncBN that also synchronizes on CPU, so the SSL fine-tuning recipe behaves the same on one
process, on several CPU processes (gloo: the tests, the CPU launchers) and on GPUs.

- GPUs, several processes: torch's SyncBatchNorm kernels (statistics all-gathered over NCCL).
- One process (or evaluation): plain BatchNorm.
- Several CPU processes: torch's SyncBatchNorm refuses CPU tensors (its statistics kernels are
  CUDA-only) and DDP refuses any SyncBatchNorm module on CPU, so this is a BatchNorm subclass
  that all-reduces the per-channel sum, sum of squares and count itself, with autograd through
  the all-reduce: the batch statistics and gradients of one process holding the whole batch.
"""
import torch
import torch.distributed as dist
from mmdet.registry import MODELS
from torch.distributed.nn.functional import all_reduce
from torch.nn.modules._functions import SyncBatchNorm as _CudaSyncBatchNorm
from torch.nn.modules.batchnorm import _BatchNorm


@MODELS.register_module('AnyDeviceSyncBN')
class AnyDeviceSyncBN(_BatchNorm):

    def __init__(self, *args, process_group=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {x.dim()}D input)')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        group = self.process_group or (dist.group.WORLD if dist.is_available()
                                       and dist.is_initialized() else None)
        world_size = dist.get_world_size(group) if group is not None else 1
        if not self.training or world_size == 1:
            return super().forward(x)
        self._check_input_dim(x)
        self.num_batches_tracked.add_(1)
        momentum = (self.momentum if self.momentum is not None else  # None: running average
                    1.0 / float(self.num_batches_tracked))
        if x.is_cuda:
            return _CudaSyncBatchNorm.apply(x, self.weight, self.bias, self.running_mean,
                                            self.running_var, self.eps, momentum, group,
                                            world_size)
        dims = [0] + list(range(2, x.dim()))
        local = torch.stack([x.sum(dims), (x * x).sum(dims),
                             x.new_full((x.shape[1], ), x.numel() / x.shape[1])])
        total = all_reduce(local, group=group)
        count = total[2]
        mean = total[0] / count
        var = (total[1] / count - mean * mean).clamp(min=0)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), momentum)
            self.running_var.lerp_((var * count / (count - 1).clamp(min=1)).detach(), momentum)
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y
