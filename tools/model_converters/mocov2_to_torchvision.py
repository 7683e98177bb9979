"""Export the query encoder of an mmpretrain MoCo or DenseCL checkpoint as a torchvision ResNet-50
state_dict.

    python tools/model_converters/mocov2_to_torchvision.py keep_epoch_100.pth resnet50_mocov2.pth

IN: a checkpoint written by training a configs/mocov2 or configs/densecl config (state_dict keys
``backbone.*``, the query encoder; ``neck.*``, the projection heads; the key encoder and the
queues). OUT: a plain
state_dict for ``torchvision.models.resnet50()``: every key but ``fc.*``, which MoCo has no
counterpart for, so load it with ``strict=False`` (or into a model without ``fc``). mmpretrain's
ResNet names its layers as torchvision does (conv1, bn1, layerN.M.conv1..3/bn1..3,
downsample.0/1), so only the ``backbone.`` prefix goes.
"""
import argparse
import os.path as osp
import sys

import torch
import torchvision

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/: the toolkit
from toolkit import bootstrap  # noqa: E402

bootstrap.setup()
from toolkit.checkpoints import checkpoint_kind, load_state_dict_file  # noqa: E402


def load_moco_backbone(path: str) -> dict:
    """The query encoder's tensors, ``backbone.`` removed; refuses anything but an mmpretrain
    MoCo or DenseCL checkpoint, saying what the file is."""
    state = load_state_dict_file(path)
    kind = checkpoint_kind(state)
    if kind not in ('mmpretrain-moco', 'mmpretrain-densecl'):
        what = {
            'fb-moco': ('a facebookresearch/moco checkpoint: its query encoder already is a '
                        'torchvision ResNet-50 under module.encoder_q. (drop that prefix and fc.*)'),
            'mmdet': 'an mmdet detector checkpoint, not a MoCo one',
            'torchvision-detector': 'a torchvision Faster R-CNN checkpoint, not a MoCo one',
        }.get(kind, f'not an mmpretrain MoCo or DenseCL checkpoint (first keys: {list(state)[:3]})')
        raise ValueError(f'{path} is {what}.')
    return {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}


def export(state: dict) -> tuple[list[str], list[str]]:
    """Load into torchvision's ResNet-50; returns (missing, unexpected) keys. Only fc.* may be
    missing; raises otherwise (e.g. a ResNet-18 or a deep-stem backbone)."""
    missing, unexpected = torchvision.models.resnet50().load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith('fc.') for k in missing):
        raise ValueError(f'the backbone is not a torchvision-layout ResNet-50: missing '
                         f'{missing[:5]}, unexpected {unexpected[:5]}')
    return missing, unexpected


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('src', help='mmpretrain MoCo or DenseCL checkpoint, e.g. keep_epoch_100.pth')
    p.add_argument('dst', help='torchvision ResNet-50 state_dict to write')
    args = p.parse_args(argv)
    try:
        state = load_moco_backbone(args.src)
        missing, _ = export(state)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    torch.save(state, args.dst)
    print(f'wrote {len(state)} tensors to {args.dst}; torchvision.models.resnet50() loads them '
          f'with strict=False, missing only {", ".join(missing)}, nothing unexpected')


if __name__ == '__main__':
    main()
