# Faster R-CNN with an MAE-pretrained ViT-B/16 and a simple feature pyramid: the peer team's
# fine-tuning (/work/shared/reference/peer-recipe.md, AP 0.320) in mmdet. This config is its
# whole-model stage (layer-wise LR decay 0.7, colour jitter, 20 epochs, step at 10) started
# straight from the MAE checkpoint; the peer's staged schedule is the s1-frozen config followed
# by s2, s3 and s4, which start from the previous stage's weights.
# Data, evaluation, RPN/RoI settings, hooks and the resumable loop are the R50 recipe's.
_base_ = '../faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py'

data_root = 'data/labeled'  # holds training/ and validation/
# mmpretrain MAE checkpoint (configs/mae/..., e.g. keep_epoch_80.pth), given with
# `tools/train.py CONFIG --pretrained PATH`. Deliberately not a real path: training stops at
# start rather than fall back to random weights.
pretrained = 'MAE-CHECKPOINT-NOT-SET (tools/train.py CONFIG --pretrained PATH)'
batch_size = 2  # the peer: 1 GPU x 2 images
lr = 1e-4  # AdamW, for a total batch of 2 (auto_scale_lr rescales for other totals)
weight_decay = 0.01  # torch AdamW's default, which the peer kept
layer_decay = 0.7  # LR of block i: lr * 0.7 ** (12 - i); patch embedding lr * 0.7 ** 13
max_epochs = 20
lr_step = 10  # StepLR: x0.1 every lr_step epochs
warmup_iters = 8000  # the peer's linear warm-up from factor 0.067, in every stage
img_size = 512  # every image resized to img_size x img_size, aspect ratio not kept
embed_dims = 768

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.VisionTransformer',
        arch='b',
        img_size=img_size,  # the MAE's 14x14 position embeddings interpolated (bicubic) on load
        patch_size=16,
        drop_path_rate=0.1,
        out_type='featmap',  # the patch tokens as a (B, 768, H/16, W/16) map
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=[
        dict(type='SimpleFeaturePyramid', in_channels=embed_dims),
        # torchvision's FeaturePyramidNetwork as the peer used it: LayerNorm after the lateral
        # and output convolutions, top-down sum, a max-pool level on top (strides 4-64)
        dict(type='FPN', in_channels=[embed_dims] * 4, out_channels=256, num_outs=5,
             norm_cfg=dict(type='mmpretrain.LN2d', eps=1e-6)),
    ],
    roi_head=dict(
        # the peer's MultiScaleRoIAlign: 8x8 output (mmdet's default 7)
        bbox_roi_extractor=dict(roi_layer=dict(output_size=8)),
        bbox_head=dict(roi_feat_size=8)))

# torchvision ColorJitter's semantics (factor ranges, random order), brightness/contrast/
# saturation in [0.1, 2.0], hue +-0.1, on the original image as the peer applied it
color_jitter = dict(type='mmpretrain.ColorJitter', brightness=(0.1, 2.0), contrast=(0.1, 2.0),
                    saturation=(0.1, 2.0), hue=(-0.1, 0.1), backend='cv2')
train_pipeline = [
    _base_.load_image,
    dict(type='LoadAnnotations', with_bbox=True),
    color_jitter,
    # GeneralizedRCNNTransform(min_size=max_size=512, fixed_size=(512, 512))
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    _base_.load_image,
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor', 'instances')),
]
train_dataloader = dict(batch_size=batch_size,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=lr, weight_decay=weight_decay),
    constructor='ViTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=layer_decay,
        # no weight decay on norms, biases and position embedding (the peer exempted the
        # backbone's; its neck and heads' norms and biases had weight decay 0.01)
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.), 'cls_token': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.067, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='StepLR', step_size=lr_step, gamma=0.1, by_epoch=True, begin=0, end=max_epochs),
]
train_cfg = dict(max_epochs=max_epochs)
auto_scale_lr = dict(base_batch_size=2)
