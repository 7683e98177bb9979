"""The distributed launchers (pytorch, slurm) on machines without GPUs as well."""
import os
import subprocess

import torch
from mmengine.config import Config


def set_launcher(cfg: Config, launcher: str) -> None:
    """Record the launcher; without GPUs, make the same launchers work on CPU (tests, laptops):
    gloo instead of nccl, DDP without device_ids, and the process group started here, because
    mmengine's init_dist calls torch.cuda.set_device unconditionally (the Runner skips its own
    init once a group exists)."""
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if not cfg.get('model_wrapper_cfg'):  # mmengine would pass device_ids=[LOCAL_RANK]
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                     broadcast_buffers=False,
                                     find_unused_parameters=cfg.get('find_unused_parameters',
                                                                    False))
    import torch.distributed as dist
    if dist.is_initialized():
        return
    if launcher == 'slurm':
        nodes = os.environ['SLURM_NODELIST']
        os.environ.setdefault('MASTER_ADDR', subprocess.getoutput(
            f'scontrol show hostname {nodes} | head -n1'))
        os.environ.setdefault('MASTER_PORT', '29500')
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    elif launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} is not supported without GPUs')
    dist.init_process_group('gloo')
