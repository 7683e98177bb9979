# Faster R-CNN R50-FPN fine-tuned from a MoCo v2 backbone on the labeled set: the seed's recipe
# (torchvision FasterRCNN, all 5 stages trainable, frozen BN, 2 GPUs x 2 images, SGD lr 0.03
# dropping x0.1 at epochs 23 and 27, 37 epochs) as one run. The s1/s2/s3 configs split this
# same schedule into three jobs that fit a 24-hour limit.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['custom_modules'], allow_failed_imports=False)

data_root = 'data/labeled'  # holds training/ and validation/
# mmpretrain MoCo checkpoint (e.g. work_dirs/mocov2_.../keep_epoch_100.pth), given with
# `tools/train.py CONFIG --pretrained PATH`. Deliberately not a real path: training stops at
# start rather than fall back to random or ImageNet weights.
pretrained = 'MOCO-CHECKPOINT-NOT-SET (tools/train.py CONFIG --pretrained PATH)'
batch_size = 2  # per GPU; the seed ran 2 GPUs x 2 (16 GB V100)
lr = 0.03  # for a total batch of 4 (auto_scale_lr rescales for other totals)
max_epochs = 37
lr_steps = [23, 27]  # the seed's stage boundaries: lr 0.03 -> 0.003 -> 0.0003
warmup_iters = 1000  # torchvision reference engine: linear warm-up over 1000 iters, factor 1/1000
val_interval = 1  # COCO eval of the validation split every N epochs (the seed: every epoch)
ckpt_interval = 1  # epochs between resumable checkpoints
num_workers = 4
seed = 0

model = dict(
    backbone=dict(
        frozen_stages=-1,  # the seed trained all 5 stages, stem included
        norm_cfg=dict(type='BN', requires_grad=False),  # BatchNorm frozen: eval mode, no grad
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    roi_head=dict(
        # the seed's (torchvision's) 2 samples per bin instead of mmdet's adaptive count, which
        # grows with the RoI: train step 0.97x torchvision's vs 0.83-0.93x (bench_train_step.py)
        bbox_roi_extractor=dict(roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(num_classes=100)),
    # torchvision keeps 2000 RPN proposals per training image after NMS (mmdet's default: 1000)
    train_cfg=dict(rpn_proposal=dict(max_per_img=2000)))

backend_args = None
# Pillow decoding fails on truncated JPEGs (OpenCV silently returns grey pixels), and the
# seed's PIL loader did not apply EXIF rotation, so the yml boxes are in raw pixel order.
load_image = dict(type='LoadImageNamed', imdecode_backend='pillow',
                  color_type='color_ignore_orientation')
train_pipeline = [
    load_image,
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    load_image,
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    # the metric builds the ground truth from these gt_instances (LoadAnnotations after Resize:
    # image pixels); 'instances' is CocoMetric's source, kept for it
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor', 'instances')),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=num_workers,
    # mmdet's aspect-ratio grouping, with per-sample seeds and in-epoch resume
    batch_sampler=dict(type='ResumableBatchSampler',
                       batch_sampler=dict(type='AspectRatioBatchSampler')),
    dataset=dict(_delete_=True, type='LabeledDetDataset', data_root=data_root, split='training',
                 filter_cfg=dict(filter_empty_gt=False),  # the seed trained on every image
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=num_workers,
    dataset=dict(_delete_=True, type='LabeledDetDataset', data_root=data_root,
                 split='validation', test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
# faster-coco-eval's C++ COCOeval: pycocotools' numbers, the whole evaluation 3-4x faster
# (tools/benchmarks/bench_coco_eval.py). maxDets 1/10/100 (mmdet's default is 100/300/1000): the
# printed summary is pycocotools' 12 lines, the ones the seed reported (SeedCocoMetric,
# custom_modules/evaluation/seed_coco_metric.py)
val_evaluator = dict(_delete_=True, type='SeedCocoMetric', metric='bbox',
                     proposal_nums=(1, 10, 100))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=lr, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=lr_steps,
         gamma=0.1),
]
# resumes inside an epoch after a time-limit stop (custom_modules/engine/runner/loops.py)
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=val_interval)
auto_scale_lr = dict(enable=True, base_batch_size=4)
randomness = dict(seed=seed)
custom_hooks = [
    dict(type='FiniteLossHook'),  # stop at the first NaN/inf loss, before it is checkpointed
    dict(type='EpochSeedHook'),  # a resumed run replays the same random stream
    dict(type='TimeLimitHook'),  # SIGUSR1 before the Slurm time limit: save, requeue
    dict(type='OwnBestCheckpointHook'),  # s2/s3 never delete an earlier stage's best file
]
# checkpoint files are complete or absent: written to a temporary file, then renamed
# (custom_modules/fileio/atomic_local.py); TimeLimitHook saves the same way
default_hooks = dict(checkpoint=dict(interval=ckpt_interval, max_keep_ckpts=3,
                                     save_best='coco/bbox_mAP', rule='greater',
                                     backend_args=dict(backend='atomic_local')))
