"""The pieces a ViT-backbone Faster R-CNN needs that mmdet and mmpretrain do not have.

The backbones themselves are mmpretrain's (``mmpretrain.VisionTransformer``, ViTSAM), the
pyramid's convolutions mmdet's ``FPN``; this module adds:

- :class:`SimpleFeaturePyramid`: turns the ViT's one stride-16 map into maps at strides 4, 8,
  16 and 32 (ViTDet's "simple feature pyramid"): as the peer built it, for mmdet's FPN, or as
  ViTDet built it, a neck by itself.
- :class:`WindowedViT`: mmpretrain's ViTSAM (windowed attention with a few global blocks,
  relative positions: ViTDet's backbone) with ViTDet's stochastic depth, that also loads
  plain-ViT checkpoints such as MAE's.

Layer-wise LR decay for these detectors is in engine/optimizers, the ``best-of://`` checkpoint
scheme the peer's stages start from in engine/runner.
"""
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from mmpretrain.models.backbones import ViTSAM
from mmpretrain.models.backbones.vit_sam import (TransformerEncoderLayer, window_partition,
                                                  window_unpartition)


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Maps at strides 4, 8, 16, 32 from a ViT's stride-16 feature map: two 2x transposed
    convolutions (a norm and GELU between them), one, the map itself, and a 2x2 max-pool.

    Without ``out_channels`` (the peer's pyramid) every map keeps the ViT's channels, and mmdet's
    ``FPN`` follows (lateral and output convolutions, top-down sum, extra max-pool level), as in
    ``neck=[dict(type='SimpleFeaturePyramid', ...), dict(type='FPN', ...)]``.

    With ``out_channels`` (ViTDet's pyramid, detectron2's ``SimpleFeaturePyramid``) it is the
    whole neck: each transposed convolution halves the channels (stride 4: C/4, stride 8: C/2),
    each level gets its own 1x1 and 3x3 convolutions to ``out_channels``, each followed by the
    norm, no bias, no activation and no top-down path, and a stride-2 subsampling of the
    stride-32 map adds stride 64.

    Args:
        in_channels: the ViT's embedding width (768 for ViT-B).
        norm_cfg: the normalization between the two transposed convolutions of stride 4 and,
            with ``out_channels``, after each convolution (a channels-first LayerNorm in ViTDet).
        out_channels: the channels of ViTDet's five output maps; None for the peer's four maps
            at ``in_channels``.
        init_cfg: mmengine initialization config.
    """

    def __init__(self, in_channels: int,
                 norm_cfg: dict = dict(type='mmpretrain.LN2d', eps=1e-6),
                 out_channels: Optional[int] = None,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        halve = out_channels is not None
        mid, low = (in_channels // 2, in_channels // 4) if halve else (in_channels, in_channels)

        def up2(cin, cout):
            return nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)

        self.scales = nn.ModuleList([
            nn.Sequential(up2(in_channels, mid), build_norm_layer(norm_cfg, mid)[1], nn.GELU(),
                          up2(mid, low)),
            up2(in_channels, mid),
            nn.Identity(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ])
        self.level_channels = [low, mid, in_channels, in_channels]
        if halve:
            def conv(cin, kernel_size):
                return ConvModule(cin, out_channels, kernel_size, padding=kernel_size // 2,
                                  bias=False, norm_cfg=norm_cfg, act_cfg=None)

            self.output_convs = nn.ModuleList(
                nn.Sequential(conv(c, 1), conv(out_channels, 3)) for c in self.level_channels)

    def forward(self, inputs: tuple) -> tuple:
        x = inputs[-1]
        outs = [scale(x) for scale in self.scales]
        if self.out_channels is None:
            return tuple(outs)
        outs = [convs(o) for convs, o in zip(self.output_convs, outs)]
        # detectron2's LastLevelMaxPool: a 1x1 max-pool of stride 2, i.e. every other pixel
        return (*outs, F.max_pool2d(outs[-1], kernel_size=1, stride=2))


class _ViTDetLayer(TransformerEncoderLayer):
    """ViTSAM's block with stochastic depth on both residual branches, as detectron2's ViT
    ``Block`` (``shortcut + drop_path(attn)``, then ``x + drop_path(mlp)``); ViTSAM's own adds
    the attention branch undropped. Both branches use the FFN's DropPath (one rate per block),
    applied per image after the windows are put back together."""

    def forward(self, x):
        shortcut = x
        x = self.ln1(x)
        if self.window_size > 0:
            height, width = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (height, width))
        x = shortcut + self.ffn.dropout_layer(x)
        return self.ffn(self.ln2(x), identity=x)


@MODELS.register_module()
class WindowedViT(ViTSAM):
    """mmpretrain's ViTSAM whose blocks drop the attention branch too (stochastic depth as
    ViTDet: :class:`_ViTDetLayer`), and that also initializes from a plain ViT's state_dict,
    such as an mmpretrain MAE checkpoint's ``backbone.*``: its ``pos_embed`` (1, 1 + H*W, C)
    loses the class token's entry and becomes the (1, H, W, C) grid ViTSAM keeps, which
    ViTSAM's own loading then interpolates to this model's grid. The rest of a ViT's tensors
    already have ViTSAM's names (``patch_embed.*``, ``layers.N.*``); ``cls_token`` and the
    final ``ln1.*`` have no place here and are left out (unexpected keys), the
    relative-position tables are not in such a file and start from zero, as in ViTDet.

    Args:
        num_extra_tokens: leading non-patch entries of a plain ViT's ``pos_embed`` (1: the class
            token).
        **kwargs: :class:`mmpretrain.models.ViTSAM` arguments.
    """

    def __init__(self, num_extra_tokens: int = 1, **kwargs) -> None:
        self.num_extra_tokens = num_extra_tokens
        super().__init__(**kwargs)
        for layer in self.layers:  # ViTSAM builds its own blocks: only their forward changes
            layer.__class__ = _ViTDetLayer

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
