# MoCo v2 ResNet-50 on the unlabeled 224x224 PNG folder: the seed's recipe
# (facebookresearch/moco main_moco.py --mlp --moco-t 0.2 --aug-plus --cos, 4 GPUs x 32, lr 0.015).
# image decoding and guard hooks as the MAE recipe's (configs/_base_/ssl_runtime.py)
_base_ = ['mmpretrain::mocov2/mocov2_resnet50_8xb32-coslr-200e_in1k.py',
          '../_base_/ssl_runtime.py']

custom_imports = dict(imports=['custom_modules', 'custom_modules.datasets.transforms.moco',
                               'custom_modules.datasets.unlabeled'],
                      allow_failed_imports=False)

data_root = 'data/unlabeled'  # the course's folder of N.PNG files, sub-folders allowed
# any image folder can be --data-root: these extensions in any case, in any sub-folder
image_extensions = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.tif', '.tiff')
batch_size = 32  # per GPU; the seed ran 4 GPUs x 32
lr = 0.015  # for a total batch of 128 (auto_scale_lr rescales for other totals)
max_epochs = 200  # cosine schedule length
# The seed fine-tuned from epoch 100 of this 200-epoch schedule, so the job stops there (and the
# fine-tuning chain starts); the same command with `--cfg-options train_cfg.max_epochs=200`
# continues the schedule to its end. Each stop keeps its weights: keep_epoch_100.pth, ...
stop_epoch = 100
ckpt_interval = 1  # epochs between resumable checkpoints
num_workers = 8
seed = 0

# The base's view pipeline computed with cv2 instead of Pillow and float64 NumPy: the same
# operations, parameter ranges and probabilities (the seed's), 2-3x the images/s per CPU core
# (tools/benchmarks/bench_moco_aug.py). The crop only ever enlarges a part of a 224x224 image,
# so cv2's resize, which has no antialias filter, loses nothing here.
view_pipeline = [
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.2, 1.), backend='cv2'),
    dict(type='RandomApply', prob=0.8, transforms=[
        dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
             backend='cv2')]),
    dict(type='CV2RandomGrayscale', prob=0.2),
    dict(type='CV2GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf', prob=0.5),
    dict(type='RandomFlip', prob=0.5),
]
train_pipeline = [
    _base_.load_image,
    dict(type='MultiView', num_views=2, transforms=[view_pipeline]),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=num_workers,
    persistent_workers=num_workers > 0,
    # same batches as the base (drop_last), with per-sample seeds and in-epoch resume
    drop_last=False,
    batch_sampler=dict(type='ResumableBatchSampler', drop_last=True),
    # redefined: cross-package inheritance tags it with `_scope_`, which the runner passes on
    # to default_collate as an argument
    collate_fn=dict(_delete_=True, type='default_collate'),
    # images without labels (the folder scan lower-cases names); an unreadable image is logged
    # and replaced by another image instead of stopping the job
    dataset=dict(_delete_=True, type='UnlabeledImageFolder', data_root=data_root,
                 with_label=False, extensions=image_extensions, pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs)
]
# stops at stop_epoch; resumes inside an epoch after a time-limit stop
# (custom_modules/engine/runner/loops.py)
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=stop_epoch)
auto_scale_lr = dict(enable=True, base_batch_size=128)
randomness = dict(seed=seed)

# checkpoint files are complete or absent: written to a temporary file, then renamed
# (custom_modules/fileio/atomic_local.py); TimeLimitHook and KeepCheckpointHook save the same way
default_hooks = dict(checkpoint=dict(interval=ckpt_interval, max_keep_ckpts=2,
                                     backend_args=dict(backend='atomic_local')))
