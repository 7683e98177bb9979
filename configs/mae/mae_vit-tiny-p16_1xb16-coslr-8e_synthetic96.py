# CPU demo scale of the MAE recipe: generated PNGs cropped to 96 px, a ViT-Tiny encoder
# (12 blocks of width 192, the same 16-px patches) with a small decoder, a few epochs.
_base_ = './mae_vit-base-p16_4xb64-amp-coslr-80e_unlabeled224.py'

data_root = 'data/synthetic/unlabeled'
batch_size = 16
lr = 1.5e-3  # no auto-scaling: a 2-minute schedule needs a large step to learn anything
max_epochs = 8
warmup_epochs = 1
crop_size = 96
num_workers = 2

num_patches = (crop_size // 16)**2
model = dict(
    backbone=dict(arch='deit-tiny', img_size=crop_size),
    neck=dict(num_patches=num_patches, embed_dim=192, decoder_embed_dim=128, decoder_depth=2,
              decoder_num_heads=4))

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=num_workers,
    dataset=dict(data_root=data_root, pipeline=[
        _base_.load_image,
        dict(type='RandomResizedCrop', scale=crop_size, crop_ratio_range=(0.2, 1.0),
             backend='pillow', interpolation='bicubic'),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackInputs'),
    ]))
# fp32 (AMP needs a GPU), no accumulation
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.95), weight_decay=0.05),
                     paramwise_cfg=dict(flat_decay_mult=0.))
auto_scale_lr = dict(enable=False)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=1e-8,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=5))
custom_hooks = [dict(type='FiniteLossHook'), dict(type='EpochSeedHook')]
randomness = dict(seed=0)
