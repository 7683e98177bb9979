from .loading import LoadImageNamed
from .torchvision_resize import TorchvisionResize

__all__ = ['LoadImageNamed', 'TorchvisionResize']
