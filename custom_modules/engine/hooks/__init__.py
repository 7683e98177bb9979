from .checkpoint_hooks import KeepCheckpointHook, OwnBestCheckpointHook
from .epoch_seed_hook import EpochSeedHook
from .finite_loss_hook import FiniteLossHook
from .precise_bn_hook import PreciseBNHook
from .time_limit_hook import TimeLimitHook
from .unreadable_image_hook import UnreadableImageHook

__all__ = ['KeepCheckpointHook', 'OwnBestCheckpointHook', 'EpochSeedHook', 'FiniteLossHook',
           'PreciseBNHook', 'TimeLimitHook', 'UnreadableImageHook']
