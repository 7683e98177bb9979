"""The distributed launchers (pytorch, slurm) on machines without GPUs as well, on one node or
several."""
import os
import re
import socket
import subprocess

import torch
from mmengine.config import Config

from custom_modules.errors import UserError


def _first_host(nodelist: str) -> str:
    out = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True,
                         text=True)
    hosts = out.stdout.split()
    if not hosts:
        raise UserError(f'scontrol show hostnames {nodelist} failed ({out.stderr.strip()}): '
                        'set MASTER_ADDR to the first node of the job step')
    return hosts[0]


def slurm_master_addr() -> str:
    """The address of rank 0's node, the same on every node of the job step: the step's first
    node (rank 0 runs there), by its name when the name resolves (real clusters, as mmengine
    takes it), else by the NodeAddr Slurm reaches it at (clusters whose node names are not
    host names, e.g. the tests' emulated nodes). The step's node list, not the job's: a step may
    use part of an allocation (salloc -N4, then a 2-node srun)."""
    nodes = os.environ.get('SLURM_STEP_NODELIST') or os.environ['SLURM_NODELIST']
    name = _first_host(nodes)
    try:
        socket.getaddrinfo(name, None)
        return name
    except socket.gaierror:
        pass
    out = subprocess.run(['scontrol', '-o', 'show', 'node', name], capture_output=True,
                         text=True).stdout
    addr = re.search(r'\bNodeAddr=(\S+)', out)
    if addr and addr.group(1) != name:
        return addr.group(1)
    raise UserError(f'the job step\'s first node {name!r} does not resolve to an address and '
                    'Slurm knows no other NodeAddr for it: set MASTER_ADDR to its address')


def launch_rank() -> int:
    """This process's rank as its launcher set it, readable before the process group exists."""
    return int(os.environ.get('RANK') or os.environ.get('SLURM_PROCID') or 0)


def set_slurm_rendezvous() -> None:
    """MASTER_ADDR and MASTER_PORT for ``--launcher slurm``, identical on every node without any
    exchange between them: rank 0's node (:func:`slurm_master_addr`) and a port from the job id,
    so that two jobs sharing a node do not collide. Values already in the environment win (the
    launchers export MASTER_PORT the same way)."""
    if 'SLURM_PROCID' not in os.environ or 'SLURM_NODELIST' not in os.environ:
        raise UserError('--launcher slurm outside a Slurm job step: start it with srun '
                        '(tools/slurm_train.sh, tools/slurm/train.sbatch) or use --launcher none')
    job = int(os.environ.get('SLURM_JOB_ID', 0))
    os.environ.setdefault('MASTER_PORT', str(20000 + job % 20000))
    if 'MASTER_ADDR' not in os.environ:
        os.environ['MASTER_ADDR'] = slurm_master_addr()


def set_launcher(cfg: Config, launcher: str) -> None:
    """Record the launcher; without GPUs, make the same launchers work on CPU (tests, laptops):
    gloo instead of nccl, DDP without device_ids, and the process group started here, because
    mmengine's init_dist calls torch.cuda.set_device unconditionally (the Runner skips its own
    init once a group exists). With ``slurm`` the rendezvous address and port are set here for
    both (mmengine's GPU path takes them from the environment)."""
    cfg.launcher = launcher
    if launcher == 'slurm':
        set_slurm_rendezvous()
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
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    elif launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} is not supported without GPUs')
    dist.init_process_group('gloo')
