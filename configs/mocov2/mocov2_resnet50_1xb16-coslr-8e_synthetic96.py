# CPU demo scale of the MoCo v2 recipe (make demo): generated PNGs cropped to 96 px, a short
# queue, a few epochs. Same model and augmentation family as the real config.
_base_ = './mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py'

data_root = 'data/synthetic/unlabeled'
batch_size = 16
lr = 0.03  # no auto-scaling: a 2-minute schedule needs a large step to learn anything
max_epochs = 8
crop_size = 96
num_workers = 2

model = dict(queue_len=1024)  # >> batch, << dataset x epochs: negatives stay fresh

view_pipeline = [
    dict(type='RandomResizedCrop', scale=crop_size, crop_ratio_range=(0.2, 1.), backend='pillow'),
    dict(type='RandomApply', prob=0.8, transforms=[
        dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)]),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True, channel_weights=(0.114, 0.587, 0.2989)),
    dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf', prob=0.5),
    dict(type='RandomFlip', prob=0.5),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=num_workers,
    persistent_workers=True,
    dataset=dict(data_root=data_root, pipeline=[
        _base_.load_image,
        dict(type='MultiView', num_views=2, transforms=[view_pipeline]),
        dict(type='PackInputs'),
    ]))
optim_wrapper = dict(optimizer=dict(lr=lr))
auto_scale_lr = dict(enable=False)
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs)
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=5))
custom_hooks = [dict(type='FiniteLossHook'), dict(type='EpochSeedHook')]
randomness = dict(seed=0)
