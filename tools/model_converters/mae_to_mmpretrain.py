"""Convert a facebookresearch/mae pretraining checkpoint (e.g. the peer team's
pretrain-mae-base-80.pth) into an mmpretrain MAE checkpoint, the file --pretrained takes for the
configs/vitdet fine-tuning.

    python tools/model_converters/mae_to_mmpretrain.py checkpoint-80.pth mae_vit-base_80e.pth

IN: what facebookresearch/mae's main_pretrain.py saves, ``{'model': state_dict, 'optimizer', ...}``
(or the state_dict alone): the encoder (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
``blocks.N.*``, ``norm.*``) and the decoder (``mask_token``, ``decoder_embed.*``,
``decoder_pos_embed``, ``decoder_blocks.N.*``, ``decoder_norm.*``, ``decoder_pred.*``).
OUT: ``{'state_dict': ...}`` with mmpretrain MAE's names (``backbone.*``, ``neck.*``). Every
tensor is used, and the result is loaded with strict=True into an mmpretrain MAE model of the
sizes the file has before it is written, so nothing can be left out or misnamed.
"""
import argparse
import os.path as osp
import re
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/: the toolkit
from toolkit import bootstrap  # noqa: E402

bootstrap.setup()
from toolkit.checkpoints import KIND_NAMES, checkpoint_kind  # noqa: E402

# timm's Block -> mmpretrain's TransformerEncoderLayer (encoder and decoder blocks alike)
_BLOCK = (('norm1.', 'ln1.'), ('norm2.', 'ln2.'), ('mlp.fc1.', 'ffn.layers.0.0.'),
          ('mlp.fc2.', 'ffn.layers.1.'), ('attn.', 'attn.'))
_NAMES = (('cls_token', 'backbone.cls_token'), ('pos_embed', 'backbone.pos_embed'),
          ('patch_embed.proj.', 'backbone.patch_embed.projection.'), ('norm.', 'backbone.ln1.'),
          ('mask_token', 'neck.mask_token'), ('decoder_pos_embed', 'neck.decoder_pos_embed'),
          ('decoder_embed.', 'neck.decoder_embed.'), ('decoder_norm.', 'neck.ln1.'),
          ('decoder_pred.', 'neck.decoder_pred.'))


def load_fb_mae(path: str) -> dict:
    """The model state_dict of a facebookresearch/mae file; refuses anything else, saying what
    the file is."""
    if not osp.isfile(path):
        raise ValueError(f'{path}: file does not exist')
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    state = ckpt.get('model', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not {'mask_token', 'decoder_pred.weight'} <= set(state):
        kind = checkpoint_kind(ckpt.get('state_dict', ckpt)) if isinstance(ckpt, dict) else None
        what = ('already an mmpretrain MAE checkpoint: give it to --pretrained as it is'
                if kind == 'mmpretrain-mae' else
                f'not a facebookresearch/mae pretraining checkpoint ({KIND_NAMES.get(kind, "?")})')
        raise ValueError(f'{path} is {what}.')
    return state


def convert(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r'(decoder_blocks|blocks)\.(\d+)\.(.+)', key)
        if m:
            group, index, rest = m.groups()
            new = next((b + rest[len(a):] for a, b in _BLOCK if rest.startswith(a)), None)
            where = 'neck.decoder_blocks' if group == 'decoder_blocks' else 'backbone.layers'
            new = new and f'{where}.{index}.{new}'
        else:
            new = next((b + key[len(a):] for a, b in _NAMES if key == a or key.startswith(a)
                        and a.endswith('.')), None)
        if new is None:
            raise ValueError(f'{key}: no mmpretrain MAE counterpart')
        out[new] = value
    return out


def check_loads(out: dict) -> str:
    """Load into mmpretrain's MAE (encoder and decoder sized from the tensors, strict=True);
    returns the model's description."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    embed, patch = out['backbone.patch_embed.projection.weight'].shape[:3:2]
    depth = 1 + max(int(k.split('.')[2]) for k in out if k.startswith('backbone.layers.'))
    ffn = out['backbone.layers.0.ffn.layers.0.0.weight'].shape[0]
    dec = out['neck.decoder_embed.weight'].shape[0]
    dec_depth = 1 + max(int(k.split('.')[2]) for k in out if k.startswith('neck.decoder_blocks.'))
    num_patches = out['backbone.pos_embed'].shape[1] - 1
    side = round(num_patches ** 0.5)
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(  # heads do not change a tensor's shape: one is enough here
        type='MAE',
        backbone=dict(type='MAEViT', arch=dict(embed_dims=embed, num_layers=depth, num_heads=1,
                                               feedforward_channels=ffn),
                      img_size=side * patch, patch_size=patch),
        neck=dict(type='MAEPretrainDecoder', num_patches=num_patches, patch_size=patch,
                  in_chans=out['neck.decoder_pred.weight'].shape[0] // patch**2,
                  embed_dim=embed, decoder_embed_dim=dec, decoder_depth=dec_depth,
                  decoder_num_heads=1,
                  mlp_ratio=out['neck.decoder_blocks.0.ffn.layers.0.0.weight'].shape[0] // dec),
        head=dict(type='MAEPretrainHead', patch_size=patch,
                  loss=dict(type='PixelReconstructionLoss', criterion='L2'))))
    model.load_state_dict(out, strict=True)
    return (f'ViT width {embed}, {depth} blocks, {patch}-px patches, {side}x{side} positions; '
            f'decoder width {dec}, {dec_depth} blocks')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('src', help='facebookresearch/mae checkpoint, e.g. checkpoint-80.pth')
    p.add_argument('dst', help='mmpretrain MAE checkpoint to write')
    args = p.parse_args(argv)
    try:
        out = convert(load_fb_mae(args.src))
        what = check_loads(out)
    except (ValueError, RuntimeError) as e:
        sys.exit(f'error: {e}')
    torch.save(dict(meta=dict(converted_from=osp.abspath(args.src)), state_dict=out), args.dst)
    print(f'wrote {len(out)} tensors to {args.dst} ({what}); mmpretrain MAE loads them with '
          'strict=True')


if __name__ == '__main__':
    main()
