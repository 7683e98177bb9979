"""Project code registered into the OpenMMLab registries.

Configs load it with
``custom_imports = dict(imports=['custom_modules'], allow_failed_imports=False)``.
"""
from . import atomic_io  # noqa: F401  (crash-safe checkpoint writes)
from . import coco_summary  # noqa: F401  (FasterCocoMetric's summary on stdout)
from .datasets import *  # noqa: F401,F403
from .hooks import (EpochSeedHook, FiniteLossHook, KeepCheckpointHook,  # noqa: F401
                    OwnBestCheckpointHook)
from .resumable import (ResumableBatchSampler, ResumableEpochBasedTrainLoop,  # noqa: F401
                        TimeLimitHook)
from .transforms import LoadImageNamed  # noqa: F401
from .torchvision_compat import TorchvisionAnchorGenerator, TorchvisionResize  # noqa: F401
