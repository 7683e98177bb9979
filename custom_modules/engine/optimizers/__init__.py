from .layer_decay_constructor import ViTLayerDecayOptimWrapperConstructor
from .mixed_precision_wrapper import MixedPrecisionOptimWrapper

__all__ = ['ViTLayerDecayOptimWrapperConstructor', 'MixedPrecisionOptimWrapper']
