from .anchor_generator import TorchvisionAnchorGenerator
from .sync_norm import AnyDeviceSyncBN
from .vitdet import SimpleFeaturePyramid, WindowedViT

__all__ = ['TorchvisionAnchorGenerator', 'AnyDeviceSyncBN', 'SimpleFeaturePyramid', 'WindowedViT']
