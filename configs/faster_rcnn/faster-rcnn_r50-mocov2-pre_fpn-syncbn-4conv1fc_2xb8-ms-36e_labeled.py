# The fine-tuning recipe for self-supervised backbones (MoCo v2 or DenseCL, given with
# --pretrained), on the seed's GPU budget (2 GPUs, the same ~1.1 M training images as its 37
# epochs at 4 per step). It follows the R50-FPN detection benchmarks of self-supervised
# pretraining: mmselfsup's, in mmdet (configs/benchmarks/mmdetection/coco/
# mask-rcnn_r50_fpn_ms-1x_coco.py), and DenseCL's, in detectron2
# (benchmarks/detection/configs/R_50_FPN_1x.yaml). What differs from the seed's recipe, and why:
# - BatchNorm trained, synchronized across GPUs, in the backbone, the FPN and a 4conv1fc box
#   head, no frozen stage, as both benchmarks: self-supervised features have other statistics
#   than the ones frozen BN would carry over (a user's report in DenseCL's issue #7, mmdet, COCO:
#   DenseCL's backbone 0.355 AP with frozen BN, 0.375 with SyncBN). MoCo's own FPN configs
#   (its issue #34; naiveSyncBN in its last detection/ configs) synchronize BN in the backbone
#   and FPN with the standard 2fc head; the 4conv1fc head with SyncBN is DenseCL's and
#   mmselfsup's. mmdet's configs/selfsup_pretrain: SyncBN in the backbone only, the 2fc head,
#   the stem frozen (frozen_stages=0).
# - the BN statistics recomputed over 200 training batches before each evaluation (precise BN:
#   detectron2's TEST.PRECISE_BN, on in DenseCL's and MoCo's configs, 200 batches of 16 images;
#   ours of 2 x 8; in mmdet, 2.x's mask_rcnn_r50_fpn_4conv1fc_syncbn_precisebn_ms-90k_coco.py is
#   the precedent); mmselfsup's mmdet benchmark has no precise BN.
# - 8 images per GPU, so the batch statistics mean something; with --amp they fit a 16 GB GPU
#   (fp32 does not: docs of the H200 measurements), LR scaled linearly from 0.02 at 16.
# - multi-scale training, shorter side 640-800: any size in the range here (RandomResize), one of
#   640, 672, ..., 800 in both benchmarks.
# - warm-up over 16,000 images as detectron2's (DenseCL's benchmark: 1000 iterations of 16 from
#   factor 0.001; mmselfsup's 1x file keeps mmdet's 500, its 2x sets 1000): 1000 iterations at
#   our 2 x 8, 16000 / B at another total batch B.
# - weight decay 1e-4 on every parameter, BN weights and biases included, as mmselfsup's mmdet
#   benchmark (mmdet's default optimizer); DenseCL's detectron2 benchmark exempts norm
#   parameters (detectron2's default SOLVER.WEIGHT_DECAY_NORM = 0).
# - input as our checkpoints were trained (mmpretrain's: RGB, torchvision's mean and std, stride
#   in the 3x3 conv); DenseCL's detectron2 file feeds BGR with std 1, stride in the 1x1.
# Where it is not the benchmarks: Faster R-CNN, not Mask R-CNN (the labeled set has boxes only);
# 36 epochs with steps at 27 and 33 (mmdet's 3x) instead of their 1x.
# One job: 36 epochs at 2 x 8 with --amp is ~4 h on two H200-class GPUs (measured train-step
# speed, evaluation not included); a slower cluster that hits its time limit continues through
# TimeLimitHook's requeue, so no staged split is needed.
#
# BatchNorm per setting (AnyDeviceSyncBN, custom_modules/models/sync_norm.py): on several GPUs
# torch's SyncBN kernels; on one process plain BN; on several CPU processes (gloo) it all-reduces
# the statistics itself, as torch's SyncBN (and DDP with it) supports CUDA tensors only.
_base_ = './faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py'

batch_size = 8  # per GPU
lr = 0.02  # for a total batch of 16 (auto_scale_lr rescales for other totals)
max_epochs = 36
lr_steps = [27, 33]  # mmdet's 3x steps
# the benchmarks' 1000 iterations of 16 images, 16000 / B iterations (rounded up) at the run's
# total batch B (end_images, tools/toolkit/batch_scaling.py)
warmup_images = 1000 * 16
precise_bn_iters = 200  # batches of 2 x 8, the benchmarks' 200 of 16
train_scales = [(1333, 640), (1333, 800)]  # (long, short) side range of RandomResize
norm_cfg = dict(type='AnyDeviceSyncBN', requires_grad=True)

model = dict(
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256,
                                 norm_cfg=norm_cfg)))

train_pipeline = [
    _base_.load_image,
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=train_scales, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=batch_size, dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end_images=warmup_images),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=lr_steps,
         gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs)
auto_scale_lr = dict(base_batch_size=16)
custom_hooks = [*_base_.custom_hooks, dict(type='PreciseBNHook', num_iters=precise_bn_iters)]
