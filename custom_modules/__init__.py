"""Project code registered into the OpenMMLab registries.

Configs load it with
``custom_imports = dict(imports=['custom_modules'], allow_failed_imports=False)``. Importing it
registers classes and two file backends (``atomic_local``, and ``sqsh`` for datasets read out of
a squashfs image) and changes nothing else; the tools
quiet the console themselves (console.py).
"""
from . import atomic_io  # noqa: F401  (the 'atomic_local' backend the configs save with)
from .coco_summary import SeedCocoMetric  # noqa: F401
from .datasets import *  # noqa: F401,F403
from .hooks import (EpochSeedHook, FiniteLossHook, KeepCheckpointHook,  # noqa: F401
                    OwnBestCheckpointHook)
from .resumable import (ResumableBatchSampler, ResumableEpochBasedTrainLoop,  # noqa: F401
                        TimeLimitHook)
from . import sqsh_backend  # noqa: F401  (the 'sqsh://' backend: data inside a .sqsh image)
from .precise_bn import PreciseBNHook  # noqa: F401
from .sync_norm import AnyDeviceSyncBN  # noqa: F401
from .transforms import LoadImageNamed  # noqa: F401
from .torchvision_compat import TorchvisionAnchorGenerator, TorchvisionResize  # noqa: F401
from .vitdet import (SimpleFeaturePyramid, ViTLayerDecayOptimWrapperConstructor,  # noqa: F401
                     WindowedViT)
