# Past the peer's recipe, towards ViTDet (Li et al. 2022; mmdet projects/ViTDet): the same
# MAE ViT-B, simple feature pyramid, heads, optimizer, layer decay and colour jitter as the
# layerdecay-20e config it inherits, with these differences:
_base_ = './faster-rcnn_vit-b-mae-pre_sfp_1xb2-layerdecay-20e_labeled512.py'

# - 1024 px instead of 512: small objects keep 4x the pixels
img_size = 1024
# - one 80-epoch run of the whole model from the MAE weights (the peer's 20 frozen + 3 x 20
#   epochs), dropping x0.1 at 88% and 96% of it as ViTDet; the long schedule large-scale
#   jitter needs
max_epochs = 80
lr_steps = [70, 77]

model = dict(
    backbone=dict(
        _delete_=True,
        # - windowed attention (14x14 windows) in all blocks but 2, 5, 8 and 11, which stay
        #   global, plus relative position tables: ViTDet's backbone, affordable at 64x64 tokens
        type='WindowedViT',
        arch='base',
        img_size=img_size,
        patch_size=16,
        window_size=14,
        use_rel_pos=True,
        out_channels=0,  # ViTSAM's own channel reduction off: the feature pyramid follows
        out_type='featmap',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=_base_.pretrained, prefix='backbone.')))

train_pipeline = [
    _base_.load_image,
    dict(type='LoadAnnotations', with_bbox=True),
    _base_.color_jitter,
    dict(type='RandomFlip', prob=0.5),
    # - large-scale jitter keeping the aspect ratio (instead of squashing every image to a
    #   square): the longer side scaled to 0.1-2.0 x 1024, then a random 1024x1024 crop
    dict(type='RandomResize', scale=(img_size, img_size), ratio_range=(0.1, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=(img_size, img_size),
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='Pad', size=(img_size, img_size), pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    _base_.load_image,
    # - test images keep their aspect ratio too: longer side 1024, padded to 1024x1024
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='Pad', size=(img_size, img_size), pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor', 'instances')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

param_scheduler = [
    _base_.param_scheduler[0],
    dict(type='MultiStepLR', milestones=lr_steps, gamma=0.1, by_epoch=True, begin=0,
         end=max_epochs),
]
train_cfg = dict(max_epochs=max_epochs)
