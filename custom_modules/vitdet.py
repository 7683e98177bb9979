"""The pieces a ViT-backbone Faster R-CNN needs that mmdet and mmpretrain do not have.

The backbones themselves are mmpretrain's (``mmpretrain.VisionTransformer``, ViTSAM), the
pyramid's convolutions mmdet's ``FPN``; this module adds:

- :class:`SimpleFeaturePyramid`: turns the ViT's one stride-16 map into maps at strides 4, 8,
  16 and 32 (ViTDet's "simple feature pyramid", as the peer built it), for mmdet's FPN.
- :class:`WindowedViT`: mmpretrain's ViTSAM (windowed attention with a few global blocks,
  relative positions: ViTDet's backbone) that also loads plain-ViT checkpoints such as MAE's.
- :class:`ViTLayerDecayOptimWrapperConstructor`: mmpretrain's layer-wise LR decay for a detector,
  whose ViT sits at ``model.backbone``.
"""
import functools

import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.model import BaseModule
from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor
from mmpretrain.models.backbones import ViTSAM


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Maps at strides 4, 8, 16, 32 from a ViT's stride-16 feature map, all with the ViT's
    channels: two 2x transposed convolutions (LayerNorm and GELU between them), one, the map
    itself, and a 2x2 max-pool. Meant to be followed by mmdet's ``FPN`` (lateral and output
    convolutions, top-down sum, extra max-pool level), as in
    ``neck=[dict(type='SimpleFeaturePyramid', ...), dict(type='FPN', ...)]``.

    Args:
        in_channels: the ViT's embedding width (768 for ViT-B).
        norm_cfg: the normalization between the two transposed convolutions of stride 4 (a
            channels-first LayerNorm in ViTDet).
        init_cfg: mmengine initialization config.
    """

    def __init__(self, in_channels: int,
                 norm_cfg: dict = dict(type='mmpretrain.LN2d', eps=1e-6),
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.in_channels = in_channels

        def up2():
            return nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2)

        self.scales = nn.ModuleList([
            nn.Sequential(up2(), build_norm_layer(norm_cfg, in_channels)[1], nn.GELU(), up2()),
            up2(),
            nn.Identity(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ])

    def forward(self, inputs: tuple) -> tuple:
        x = inputs[-1]
        return tuple(scale(x) for scale in self.scales)


@MODELS.register_module()
class WindowedViT(ViTSAM):
    """mmpretrain's ViTSAM that also initializes from a plain ViT's state_dict, such as an
    mmpretrain MAE checkpoint's ``backbone.*``: its ``pos_embed`` (1, 1 + H*W, C) loses the
    class token's entry and becomes the (1, H, W, C) grid ViTSAM keeps, which ViTSAM's own
    loading then interpolates to this model's grid. The rest of a ViT's tensors already have
    ViTSAM's names (``patch_embed.*``, ``layers.N.*``); ``cls_token`` and the final ``ln1.*``
    have no place here and are left out (unexpected keys), the relative-position tables are not
    in such a file and start from zero, as in ViTDet.

    Args:
        num_extra_tokens: leading non-patch entries of a plain ViT's ``pos_embed`` (1: the class
            token).
        **kwargs: :class:`mmpretrain.models.ViTSAM` arguments.
    """

    def __init__(self, num_extra_tokens: int = 1, **kwargs) -> None:
        self.num_extra_tokens = num_extra_tokens
        super().__init__(**kwargs)

    def _prepare_pos_embed(self, state_dict, prefix, *args, **kwargs):
        name = prefix + 'pos_embed'
        pos_embed = state_dict.get(name)
        if pos_embed is not None and pos_embed.ndim == 3:
            grid = pos_embed[:, self.num_extra_tokens:]
            side = round(grid.shape[1] ** 0.5)
            if side * side != grid.shape[1]:
                raise ValueError(f'{name}: {tuple(pos_embed.shape)} is not {self.num_extra_tokens}'
                                 ' extra token(s) + a square grid of patch positions')
            state_dict[name] = grid.reshape(1, side, side, grid.shape[-1])
        super()._prepare_pos_embed(state_dict, prefix, *args, **kwargs)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ViTLayerDecayOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` for a detector: each parameter's
    depth comes from ``model.backbone.get_layer_depth`` (mmpretrain's ViTs: patch embedding,
    position embedding and class token 0, block i at i + 1), and everything outside the backbone
    (neck, heads) and the backbone's final norm is at the top. With ``layer_decay_rate`` r and
    12 blocks the LR is lr for the top, lr * r for block 11, ..., lr * r**12 for block 0 and
    lr * r**13 for the patch embedding. ``paramwise_cfg`` is mmpretrain's (``norm_decay_mult``,
    ``bias_decay_mult``, ``custom_keys`` with ``decay_mult``...)."""

    def add_params(self, params, module, prefix='', get_layer_depth=None, **kwargs):
        if get_layer_depth is None:  # the model itself: depths from its backbone
            get_layer_depth = functools.partial(module.backbone.get_layer_depth,
                                                prefix='backbone.')
        super().add_params(params, module, prefix, get_layer_depth, **kwargs)
