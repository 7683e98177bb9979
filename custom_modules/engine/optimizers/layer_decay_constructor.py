"""Layer-wise learning-rate decay for a detector whose ViT sits at ``model.backbone``."""
import functools

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor


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
