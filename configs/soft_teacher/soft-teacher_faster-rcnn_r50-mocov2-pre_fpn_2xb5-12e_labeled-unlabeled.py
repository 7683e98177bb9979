# Semi-supervised fine-tuning (Soft Teacher, Xu et al., ICCV 2021; mmdet's SoftTeacher) of the
# seed's detector (R50-FPN, frozen BN) from the best checkpoint of its supervised s1-s3 chain:
# the 512,000 unlabeled images teach it through a teacher's pseudo-boxes. The student trains on
# labeled and unlabeled images at once; the teacher is its exponential moving average.
# Values, each from mmdet's configs/soft_teacher/soft-teacher_faster-rcnn_r50-caffe_fpn_180k_
# semi-0.1-coco.py and _base_/datasets/semi_coco_detection.py (the paper's settings) unless said:
# - 5 images per GPU, 1 labeled : 4 unlabeled (source_ratio): the paper's 1:4 for COCO with
#   1-10% of the labels; ours, 30,000 labeled among 542,000 images, is 5.5%.
# - pseudo-boxes: teacher scores >= 0.9 for the classifier (cls_pseudo_thr) and the RPN
#   (rpn_pseudo_thr), box regression on boxes whose jittered (10 x, 6%) predictions vary
#   < 0.02 (reg_pseudo_thr, jitter_times, jitter_scale); unlabeled losses weighted 4
#   (unsup_weight, the paper's alpha); the teacher is an EMA of the student with momentum
#   0.999 per iteration (MeanTeacherHook's 0.001).
# - SGD lr 0.01 for 8 GPUs x 5 = 40 images (auto_scale_lr rescales: 0.0025 at 2 x 5), 500
#   warm-up iterations from x0.001, x0.1 steps at 2/3 and 8/9 of the schedule (120k, 160k of
#   180k iterations).
# - scales: every branch resized to a random shorter side in 400-1200 (long side <= 1333),
#   labeled images (375-500 px photos) and unlabeled ones (224 x 224, the same kind of photos
#   shrunk) alike, so objects in both come out at the sizes the supervised stages trained at
#   (shorter side 800) on average; the labeled branch adds one colour RandAugment, the student's
#   unlabeled branch colour and geometric RandAugment and RandomErasing, the teacher's only flips.
# What differs and why:
# - epochs of one pass over the labeled images instead of iterations (SemiSupervisedSampler):
#   the resume, time-limit and best-checkpoint machinery of the other stages applies as is. At
#   2 GPUs an epoch is 15,000 iterations; 12 epochs are mmdet's 180,000 iterations (at a quarter
#   of its batch), steps at epochs 8 and 11.
# - it starts from a trained detector (the s3 chain's best), as Unbiased Teacher's burn-in
#   stage does, instead of from ImageNet weights; the teacher and the student both start there.
# - the course's 100 classes and Pillow decoding without EXIF rotation, as the seed's stages.
_base_ = '../faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py'

data_root = 'data/labeled'  # labeled images: the course layout, COCO JSON, or a .sqsh of either
unlabeled_root = 'data/unlabeled'  # any image folder or .sqsh (tools/train.py --unlabeled)
# the supervised chain's best-on-validation checkpoint over its three stages
start_from = ('best-of://work_dirs/faster-rcnn_r50-mocov2-pre_fpn_2xb2-s1-23e_labeled,'
              'work_dirs/faster-rcnn_r50-mocov2-pre_fpn_2xb2-s2-27e_labeled,'
              'work_dirs/faster-rcnn_r50-mocov2-pre_fpn_2xb2-s3-37e_labeled')
batch_size = 5  # per GPU
source_ratio = [1, 4]  # labeled : unlabeled images per batch
lr = 0.01  # for a total batch of 40 (auto_scale_lr rescales for other totals)
max_epochs = 12  # passes over the labeled images
lr_steps = [8, 11]
warmup_iters = 500
unsup_weight = 4.0
pseudo_thr = 0.9
ema_momentum = 0.001  # teacher = (1 - m) teacher + m student, every iteration
train_scales = [(1333, 400), (1333, 1200)]

detector = _base_.model
detector.backbone.init_cfg = None  # every weight comes from start_from
model = dict(
    _delete_=True,
    type='SoftTeacher',
    detector=detector,
    data_preprocessor=dict(type='MultiBranchDataPreprocessor',
                           data_preprocessor=detector.data_preprocessor),
    semi_train_cfg=dict(
        freeze_teacher=True,
        sup_weight=1.0,
        unsup_weight=unsup_weight,
        pseudo_label_initial_score_thr=0.5,
        rpn_pseudo_thr=pseudo_thr,
        cls_pseudo_thr=pseudo_thr,
        reg_pseudo_thr=0.02,
        jitter_times=10,
        jitter_scale=0.06,
        min_pseudo_bbox_wh=(1e-2, 1e-2)),
    semi_test_cfg=dict(predict_on='teacher'))  # the paper reports the teacher
load_from = start_from

color_space = [[dict(type=t)] for t in ('ColorTransform', 'AutoContrast', 'Equalize',
                                        'Sharpness', 'Posterize', 'Solarize', 'Color',
                                        'Contrast', 'Brightness')]
geometric = [[dict(type=t)] for t in ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')]
branch_field = ['sup', 'unsup_teacher', 'unsup_student']
unsup_meta = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
              'flip_direction', 'homography_matrix')
sup_pipeline = [
    _base_.load_image,
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=train_scales, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandAugment', aug_space=color_space, aug_num=1),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='MultiBranch', branch_field=branch_field, sup=dict(type='PackDetInputs')),
]
weak_pipeline = [
    dict(type='RandomResize', scale=train_scales, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs', meta_keys=unsup_meta),
]
strong_pipeline = [
    dict(type='RandomResize', scale=train_scales, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomOrder', transforms=[
        dict(type='RandAugment', aug_space=color_space, aug_num=1),
        dict(type='RandAugment', aug_space=geometric, aug_num=1)]),
    dict(type='RandomErasing', n_patches=(1, 5), ratio=(0, 0.2)),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs', meta_keys=unsup_meta),
]
unsup_pipeline = [
    _base_.load_image,
    dict(type='LoadEmptyAnnotations'),
    dict(type='MultiBranch', branch_field=branch_field, unsup_teacher=weak_pipeline,
         unsup_student=strong_pipeline),
]
labeled_dataset = dict(type='LabeledDetDataset', data_root=data_root, split='training',
                       filter_cfg=dict(filter_empty_gt=False), pipeline=sup_pipeline)
unlabeled_dataset = dict(type='UnlabeledDetDataset', data_root=unlabeled_root,
                         pipeline=unsup_pipeline)
train_dataloader = dict(
    _delete_=True,
    batch_size=batch_size,
    num_workers=_base_.num_workers,
    persistent_workers=True,
    sampler=dict(type='SemiSupervisedSampler', batch_size=batch_size,
                 source_ratio=source_ratio),
    batch_sampler=dict(type='ResumableBatchSampler', drop_last=True),
    # the labeled set's classes name the model's outputs
    dataset=dict(type='SeededConcatDataset', datasets=[labeled_dataset, unlabeled_dataset],
                 ignore_keys=['classes', 'palette']))

optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=lr_steps,
         gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs)
val_cfg = dict(type='TeacherStudentValLoop')  # scores both: teacher/coco/... student/coco/...
auto_scale_lr = dict(base_batch_size=40)
custom_hooks = [*_base_.custom_hooks, dict(type='MeanTeacherHook', momentum=ema_momentum)]
default_hooks = dict(checkpoint=dict(save_best='teacher/coco/bbox_mAP'))
