# What the pretraining recipes (MoCo v2, MAE; DenseCL through MoCo v2's) add alike to their
# mmpretrain configs: how an image is decoded, and the hooks that guard a long run. Listed beside
# the mmpretrain config in their `_base_`, so it holds only keys mmpretrain's configs leave unset.

# decoded as the detection configs decode (custom_modules/datasets/transforms/loading.py):
# Pillow, EXIF orientation not applied, 3-channel colour, 16-bit scaled; the course's RGB PNGs
# give the same pixels as cv2
load_image = dict(type='LoadImageNamed', imdecode_backend='pillow',
                  color_type='color_ignore_orientation')

custom_hooks = [
    dict(type='FiniteLossHook'),  # stop at the first NaN/inf loss, before it is checkpointed
    dict(type='EpochSeedHook'),  # a resumed run replays the same random stream
    dict(type='TimeLimitHook'),  # SIGUSR1 before the Slurm time limit: save, requeue
    dict(type='UnreadableImageHook'),  # per-epoch count of skipped unreadable PNGs
    dict(type='KeepCheckpointHook'),  # weights at the stop epoch; never a resume point
]
