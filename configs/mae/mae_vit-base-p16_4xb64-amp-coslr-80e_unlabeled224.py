# MAE ViT-B/16 on the unlabeled 224x224 PNG folder: the peer team's pretraining
# (hmdliu/DL-SP22-Team2 main_pretrain.py as its jobs ran it: facebookresearch/mae, 4 GPUs x 64,
# gradients of 2 steps accumulated, blr 1.5e-4, 20 warm-up epochs, half-cosine over 200 epochs,
# stopped after 80 epochs in two 24-hour jobs; final loss ~0.27).
# image decoding and guard hooks as the MoCo v2 recipe's (configs/_base_/ssl_runtime.py)
_base_ = ['mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py',
          '../_base_/ssl_runtime.py']

custom_imports = dict(imports=['custom_modules', 'custom_modules.datasets.unlabeled'],
                      allow_failed_imports=False)

data_root = 'data/unlabeled'  # the course's folder of N.PNG files, sub-folders allowed
# any image folder can be --data-root: the same files as MoCo v2's
image_extensions = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.tif', '.tiff')
batch_size = 64  # per GPU; the peer ran 4 GPUs x 64
accumulate = 2  # optimizer steps every 2 iterations: 512 images per update, as the peer's
lr = 1.5e-4 * 512 / 256  # MAE's base LR for 512 images per update
max_epochs = 200  # cosine schedule length (the peer's --epochs default)
warmup_epochs = 20
# the peer fine-tuned from the checkpoint after epoch 80 of this 200-epoch schedule, so the job
# stops there; `--cfg-options train_cfg.max_epochs=200` continues the schedule to its end.
# Each stop keeps its weights: keep_epoch_80.pth, ...
stop_epoch = 80
ckpt_interval = 1  # epochs between resumable checkpoints
num_workers = 8
seed = 0

# the peer's loss is on the (ImageNet-normalized) pixels themselves: its --norm_pix_loss was
# never set (mmpretrain's recipe, and peer-recipe.md, normalize each target patch instead)
model = dict(head=dict(norm_pix=False))

train_pipeline = [  # MAE's: RandomResizedCrop(224, scale=(0.2, 1.0), bicubic), flip
    _base_.load_image,
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.2, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
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
    # images without labels; an unreadable image is logged and replaced by another image
    # instead of stopping the job
    dataset=dict(_delete_=True, type='UnlabeledImageFolder', data_root=data_root,
                 with_label=False, extensions=image_extensions, pipeline=train_pipeline))

# mixed precision in bfloat16 where the GPU has it (A100, H100), else float16 as the peer's:
# fp16 MAE pretraining is known to go NaN late in training (mmpretrain issue 1632), bf16 does
# not (custom_modules/engine/optimizers/mixed_precision_wrapper.py; --amp fp16 forces fp16)
optim_wrapper = dict(
    type='MixedPrecisionOptimWrapper',
    dtype='auto',
    optimizer=dict(lr=lr),
    accumulative_counts=accumulate,
    # timm's add_weight_decay, as the peer: no decay on 1-D tensors (norms, biases) only
    paramwise_cfg=dict(_delete_=True, flat_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=1e-8,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
# stops at stop_epoch; resumes inside an epoch after a time-limit stop
# (custom_modules/engine/runner/loops.py)
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=stop_epoch)
# the LR above is for 4 x 64 images per iteration (x 2 accumulated)
auto_scale_lr = dict(enable=True, base_batch_size=256)
randomness = dict(seed=seed)
resume = False  # tools/train.py --resume decides (the base resumes by itself)

# checkpoint files are complete or absent: written to a temporary file, then renamed
# (custom_modules/fileio/atomic_local.py); TimeLimitHook and KeepCheckpointHook save the same way
default_hooks = dict(checkpoint=dict(interval=ckpt_interval, max_keep_ckpts=2,
                                     backend_args=dict(backend='atomic_local')))
