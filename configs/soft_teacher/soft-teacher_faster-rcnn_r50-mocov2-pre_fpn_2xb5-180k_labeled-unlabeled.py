# The Soft Teacher stage of soft-teacher_faster-rcnn_r50-mocov2-pre_fpn_2xb5-12e_labeled-
# unlabeled.py counted in iterations, as mmdet's soft_teacher configs count it: the same model,
# data, batches and LR; 180,000 iterations whatever the number of GPUs (the epoch config keeps
# 12 passes over the labeled images instead). At 2 GPUs x 5 images the two are the same schedule
# but for the second LR step: mmdet's 160k here, epoch 11 (165k, whole epochs) there.
# ResumableIterBasedTrainLoop keeps what the epoch loop gives the other stages: the time-limit
# stop and requeue, timed checkpoints, exact resume from any checkpoint (each iteration's
# randomness is seeded from its number), validations marked pending until they end.
_base_ = './soft-teacher_faster-rcnn_r50-mocov2-pre_fpn_2xb5-12e_labeled-unlabeled.py'

max_iters = 180000  # mmdet's 180k schedule
lr_steps = [120000, 160000]  # x0.1 at 2/3 and 8/9, mmdet's
# teacher and student scored on the validation split, and a resumable checkpoint, every 15,000
# iterations: once per pass over the labeled images at 2 GPUs (mmdet validates every 5,000 on
# COCO's 5,000 images; ours are 20,000, scored twice); timed saves cover the hours between
val_interval = 15000
ckpt_interval = 15000

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=_base_.warmup_iters),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=lr_steps,
         gamma=0.1),
]
train_cfg = dict(_delete_=True, type='ResumableIterBasedTrainLoop', max_iters=max_iters,
                 val_interval=val_interval)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=ckpt_interval))
log_processor = dict(by_epoch=False)
