"""Config adjustments shared by tools/train.py and tools/test.py.

They set the evaluated config fields directly: a top-level variable such as ``data_root`` is
substituted when the config file is read, so overriding it afterwards changes nothing.
"""
import os
import os.path as osp
import subprocess

import torch
from mmengine.config import Config


def default_work_dir(config_path: str) -> str:
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def dataloader_datasets(cfg: Config, names=('train_dataloader', 'val_dataloader',
                                            'test_dataloader')):
    for name in names:
        loader = cfg.get(name)
        if loader:
            yield loader['dataset']


def set_data_root(cfg: Config, data_root: str, names=None) -> None:
    """Point every dataloader (or those in ``names``) at another dataset folder."""
    if not osp.isdir(data_root):
        raise FileNotFoundError(f'--data-root {data_root}: folder does not exist')
    for ds in (dataloader_datasets(cfg, names) if names else dataloader_datasets(cfg)):
        ds['data_root'] = data_root
    cfg.data_root = data_root


def set_pretrained(cfg: Config, path: str) -> None:
    """Backbone checkpoint for a detection config (model.backbone.init_cfg.checkpoint)."""
    init_cfg = cfg.model.get('backbone', {}).get('init_cfg')
    if not init_cfg or init_cfg.get('type') != 'Pretrained':
        raise ValueError('--pretrained: this config has no Pretrained backbone init_cfg '
                         '(stage 2/3 configs resume from the previous stage instead)')
    if not osp.isfile(path):
        raise FileNotFoundError(f'--pretrained {path}: file does not exist')
    init_cfg['checkpoint'] = path
    cfg.pretrained = path


def drop_backbone_init(cfg: Config) -> None:
    if 'model' in cfg and cfg.model.get('backbone', {}).get('init_cfg'):
        cfg.model.backbone.init_cfg = None


def check_pretrained(cfg: Config) -> None:
    """Fail before building anything when the backbone checkpoint is unset or missing."""
    init_cfg = cfg.model.get('backbone', {}).get('init_cfg') if 'model' in cfg else None
    if not init_cfg or init_cfg.get('type') != 'Pretrained':
        return
    path = init_cfg.get('checkpoint') or ''
    if '://' not in path and not osp.isfile(path):
        raise FileNotFoundError(
            f'backbone checkpoint {path!r} does not exist. Give the MoCo checkpoint with '
            '`tools/train.py CONFIG --pretrained PATH` (or --cfg-options '
            'model.backbone.init_cfg.checkpoint=PATH).')


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


def load_state_dict_file(path: str) -> dict:
    """A checkpoint file's state_dict: its 'state_dict' entry, or the file itself if it is one."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: checkpoint file does not exist')
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{path} is not a checkpoint with a state_dict')
    return state


def checkpoint_kind(state: dict) -> str:
    """What wrote a state_dict, from its key prefixes (DDP's 'module.' ignored): 'mmdet' (a
    detector), 'torchvision-detector', 'fb-moco' (facebookresearch/moco), 'mmpretrain-moco',
    'backbone' (backbone.* alone) or 'unknown'. The tools that refuse a wrong file use this, so
    they agree on what a file is."""
    keys = [k[len('module.'):] if k.startswith('module.') else k for k in state]

    def has(*prefixes):
        return any(k.startswith(prefixes) for k in keys)

    if has('rpn_head.', 'roi_head.'):
        return 'mmdet'
    if has('roi_heads.'):
        return 'torchvision-detector'
    if has('encoder_q.'):
        return 'fb-moco'
    if has('backbone.'):
        return ('mmpretrain-moco' if has('encoder_k.', 'momentum_encoder.') or 'queue' in keys
                else 'backbone')
    return 'unknown'


def check_detector_checkpoint(path: str) -> None:
    """Refuse anything but an mmdet detector checkpoint, saying what the file is and what to do
    with it."""
    state = load_state_dict_file(path)
    kind = checkpoint_kind(state)
    if kind == 'mmdet':
        return
    if kind == 'torchvision-detector':
        raise ValueError(
            f"{path} is a torchvision Faster R-CNN (e2e) checkpoint, e.g. the seed's. Convert it "
            f'first: python tools/model_converters/torchvision_frcnn_to_mmdet.py {path} OUT.pth, '
            'then evaluate OUT.pth with '
            'configs/faster_rcnn/faster-rcnn_r50-tv-e2e_fpn_1xb2_labeled-val.py.')
    if kind == 'fb-moco':
        what = 'a facebookresearch/moco backbone checkpoint (keys module.encoder_q.*)'
    elif kind in ('mmpretrain-moco', 'backbone'):
        what = ('a backbone-only checkpoint (e.g. MoCo pretraining: backbone.*, neck.*, no '
                'rpn_head.* / roi_head.*)')
    else:
        what = f'not an mmdet detector checkpoint (first keys: {list(state)[:3]})'
    raise ValueError(f'{path} is {what}. Evaluation needs a full detector checkpoint written by '
                     'tools/train.py with a Faster R-CNN config (e.g. work_dirs/<config>/'
                     'epoch_37.pth); backbone checkpoints are for --pretrained when training.')
