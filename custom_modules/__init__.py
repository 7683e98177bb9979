"""Project code registered into the OpenMMLab registries.

Configs load it with
``custom_imports = dict(imports=['custom_modules'], allow_failed_imports=False)``.
"""
from .console import quiet_imports as _quiet_imports

# mmdet's and mmpretrain's dataset packages print an optional-package notice when first
# imported (the registrations below import them): drop that one line (console.py)
_quiet_imports()

from . import atomic_io  # noqa: F401,E402  (crash-safe checkpoint writes)
from .coco_summary import SeedCocoMetric  # noqa: F401,E402
from .datasets import *  # noqa: F401,F403,E402
from .hooks import (EpochSeedHook, FiniteLossHook, KeepCheckpointHook,  # noqa: F401,E402
                    OwnBestCheckpointHook)
from .resumable import (ResumableBatchSampler, ResumableEpochBasedTrainLoop,  # noqa: F401,E402
                        TimeLimitHook)
from .sync_norm import AnyDeviceSyncBN  # noqa: F401,E402
from .transforms import LoadImageNamed  # noqa: F401,E402
from .torchvision_compat import TorchvisionAnchorGenerator, TorchvisionResize  # noqa: F401,E402
from .vitdet import (SimpleFeaturePyramid, ViTLayerDecayOptimWrapperConstructor,  # noqa: F401,E402
                     WindowedViT)
