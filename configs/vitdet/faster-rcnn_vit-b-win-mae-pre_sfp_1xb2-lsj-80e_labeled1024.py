# ViTDet (Li et al. 2022) as facebookresearch/detectron2 projects/ViTDet trains its ViT-B
# (configs/COCO/mask_rcnn_vitdet_b_100ep.py, common/models/mask_rcnn_vitdet.py, common/optim.py,
# modeling/backbone/vit.py), from our MAE ViT-B on the labeled set. As ViTDet: windowed attention
# (14x14, blocks 2, 5, 8, 11 global) with relative positions, drop path 0.1 on the attention and
# the MLP branch, its simple feature pyramid (channels halved per up-scale, 1x1 + 3x3 convs with
# LayerNorm per level, no top-down path), a 2-conv RPN head, a 4conv1fc box head with LayerNorm,
# 7x7 RoIAlign, 1024-px large-scale jitter without colour jitter, AdamW 1e-4 at 64 images with
# weight decay 0.1 and layer decay 0.7, 250 warm-up iterations from 0.001, x0.1 at 89% and 96%.
# Where it is not ViTDet, and why:
# - the backbone: ViTDet starts from the official MAE ViT-B (1600 epochs on ImageNet-1k,
#   normalized-pixel targets); ours from our MAE ViT-B pretrained on the unlabeled set with plain
#   pixel targets (configs/mae/), as the peer's recipe.
# - Faster R-CNN, not Mask R-CNN: the labeled set has boxes only (no mask head, no mask loss).
# - 1 GPU x 2 images instead of 64: the LR follows the square root of the batch ratio
#   (auto_scale_lr from 64, rule='sqrt', as for AdamW; ViTDet never trained below 64):
#   1 x 2 -> 1.77e-5, 4 x 16 -> 1e-4 (ViTDet's own); linear scaling would give 3.1e-6 at 1 x 2,
#   32x below the 1e-4 the peer trained with at that batch (docs/recipes.md, the LR sweep). The
#   warm-up covers ViTDet's 16,000 images at any total batch: 8000 iterations at 1 x 2, 250 at
#   4 x 16.
# - 80 epochs of our labeled set instead of 100 of COCO (the filename's schedule), with the LR
#   drops at the same fractions of training.
# - fp32 unless tools/train.py --amp (ViTDet trains with mixed precision).
# - images without boxes are trained on (the seed's choice; detectron2 drops them), and the
#   proposal/sampling/test settings are mmdet's Faster R-CNN defaults, which are detectron2's
#   (2000/1000 proposals per level, 1000 kept, 512 RoIs at 25% positives, score 0.05, 100 boxes).
# - the absolute position embedding is a learned 64x64 grid, interpolated (bicubic) once from
#   the MAE's 14x14 when the checkpoint is loaded (mmpretrain's ViTSAM); detectron2 keeps the
#   14x14 grid as the parameter and interpolates it on every forward.
# - padding in the mean colour as integers (104, 116, 124): within 0.01 of 0 after
#   normalization; detectron2 pads the normalized image with exactly 0.
# - gradients all-reduced in fp32: detectron2's DDP fp16 compression (train.ddp.fp16_compression)
#   is not used.
# - weight decay 0.1 stays on every bias and on the pyramid's and heads' channels-first
#   LayerNorms, as in detectron2 (get_default_optimizer_params with weight_decay_bias=None; its
#   LayerNorm is not a torch norm module); mmdet's port of ViTDet gives them 0 (every 1-D tensor).
_base_ = './faster-rcnn_vit-b-mae-pre_sfp_1xb2-layerdecay-20e_labeled512.py'

img_size = 1024
batch_size = 2  # per GPU, 1 GPU
vitdet_batch = 64  # ViTDet's total batch, the base of its LR and warm-up
lr = 1e-4  # AdamW at vitdet_batch images (auto_scale_lr: x sqrt(total batch / 64))
weight_decay = 0.1
layer_decay = 0.7
drop_path_rate = 0.1
# ViTDet warms up over 250 iterations of 64 images: the same images at the run's total batch B,
# 16000 / B iterations rounded up (end_images, tools/toolkit/batch_scaling.py)
warmup_images = 250 * vitdet_batch
warmup_factor = 0.001
max_epochs = 80
# ViTDet's drops at 163889 and 177546 of 184375 iterations (88.9%, 96.3%) -> epochs 71, 77
lr_steps = [71, 77]
embed_dims = 768
norm_cfg = dict(type='mmpretrain.LN2d', eps=1e-6)  # detectron2's channels-first "LN"

model = dict(
    backbone=dict(
        _delete_=True,
        type='WindowedViT',
        arch='base',
        img_size=img_size,
        patch_size=16,
        window_size=14,
        use_rel_pos=True,
        out_channels=0,  # ViTSAM's own channel reduction off: the feature pyramid follows
        out_type='featmap',
        drop_path_rate=drop_path_rate,
        init_cfg=dict(type='Pretrained', checkpoint=_base_.pretrained, prefix='backbone.')),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=embed_dims,
              out_channels=256, norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        # detectron2's ROIAlignV2: 7x7, adaptive sampling, aligned (mmdet's RoIAlign defaults)
        bbox_roi_extractor=dict(roi_layer=dict(output_size=7, sampling_ratio=0)),
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', roi_feat_size=7, conv_out_channels=256,
                       fc_out_channels=1024, norm_cfg=norm_cfg)),
    train_cfg=dict(rpn_proposal=dict(max_per_img=1000)))

# padding in the mean colour (BGR as loaded), as integers: within 0.01 of detectron2's 0 after
# normalization
pad = dict(type='Pad', size=(img_size, img_size), pad_val=dict(img=(104, 116, 124)))
train_pipeline = [
    _base_.load_image,
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    # large-scale jitter (detectron2's ResizeScale + FixedSizeCrop): the image fitted into
    # 0.1-2.0 x 1024 keeping its aspect ratio, then a random crop of at most 1024x1024
    dict(type='RandomResize', scale=(img_size, img_size), ratio_range=(0.1, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=(img_size, img_size),
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    pad,
    dict(type='PackDetInputs'),
]
test_pipeline = [
    _base_.load_image,
    # longer side 1024, padded to 1024x1024 (ResizeShortestEdge(1024, max_size=1024))
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    pad,
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor', 'instances')),
]
train_dataloader = dict(batch_size=batch_size, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(lr=lr, weight_decay=weight_decay),
    paramwise_cfg=dict(
        _delete_=True,
        layer_decay_rate=layer_decay,
        # detectron2's get_default_optimizer_params: no decay on torch norm modules (the ViT
        # blocks' LayerNorms) and on pos_embed; biases and the pyramid's and heads'
        # channels-first LayerNorms keep 0.1 (mmdet's port of ViTDet zeroes those too)
        custom_keys={'.ln1.': dict(decay_mult=0.), '.ln2.': dict(decay_mult=0.),
                     'pos_embed': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=warmup_factor, by_epoch=False, begin=0,
         end_images=warmup_images),
    dict(type='MultiStepLR', milestones=lr_steps, gamma=0.1, by_epoch=True, begin=0,
         end=max_epochs),
]
train_cfg = dict(max_epochs=max_epochs)
auto_scale_lr = dict(base_batch_size=vitdet_batch, rule='sqrt')
