# CPU demo scale of the ViTDet-style config, for tools/compare_recipes.py beside the peer's ViT
# demo (faster-rcnn_vit-tiny-mae-pre_sfp_1xb4-demo-4e_synthetic.py): the same ViT-Tiny from the
# MAE demo, the same budget (4 epochs of batch 4 at 256 px, LR 2e-4 without auto-scaling, 50
# warm-up steps, x0.1 for the last epoch, the same proposal counts) and ViTDet's model and data:
# windowed attention with relative positions (blocks 2, 5, 8, 11 global), drop path on both
# branches, its simple pyramid, 2-conv RPN, 4conv1fc LayerNorm head, large-scale jitter, weight
# decay 0.1, warm-up from 0.001.
_base_ = ['./faster-rcnn_vit-b-win-mae-pre_sfp_1xb2-lsj-80e_labeled1024.py',
          '../_base_/synthetic_demo.py']  # what the demos share (demo_* names)

data_root = 'data/synthetic/labeled'
batch_size = 4
lr = 2e-4
max_epochs = 4
lr_step = 3
warmup_iters = 50
img_size = 256  # the generated images are 160-320 px
embed_dims = 192  # ViT-Tiny
# ViTDet's 14-patch windows tile its 64x64 grid about 4.6 times per side; 4-patch windows tile
# this 16x16 grid 4 times
window_size = 4
num_workers = 2

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=embed_dims, num_layers=12, num_heads=3, feedforward_channels=768,
                  global_attn_indexes=[2, 5, 8, 11]),
        img_size=img_size,
        window_size=window_size),
    neck=dict(in_channels=embed_dims),
    **_base_.demo_proposals)  # the peer demo's proposal and RoI counts

pad = dict(type='Pad', size=(img_size, img_size), pad_val=dict(img=(104, 116, 124)))
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=num_workers,
    dataset=dict(data_root=data_root, pipeline=[
        _base_.load_image,
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='RandomResize', scale=(img_size, img_size), ratio_range=(0.1, 2.0),
             keep_ratio=True),
        dict(type='RandomCrop', crop_type='absolute_range', crop_size=(img_size, img_size),
             recompute_bbox=True, allow_negative_crop=True),
        dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
        pad,
        dict(type='PackDetInputs'),
    ]))
test_dataloader = dict(batch_size=4, num_workers=num_workers, dataset=dict(
    data_root=data_root, pipeline=[
        _base_.load_image,
        dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
        pad,
        *_base_.test_pipeline[-2:]]))

optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='StepLR', step_size=lr_step, gamma=0.1, by_epoch=True, begin=0, end=max_epochs),
]
train_cfg = dict(max_epochs=max_epochs)
# no validation inside training: tools/test.py evaluates afterwards
val_dataloader = val_evaluator = val_cfg = None
auto_scale_lr = dict(enable=False)
default_hooks = dict(logger=dict(interval=5),
                     checkpoint=dict(interval=max_epochs, save_best=None))
