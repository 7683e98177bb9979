# The Soft Teacher stage for the SSL recipe's detector (faster_rcnn/..._fpn-syncbn-4conv1fc_2xb8-
# ms-36e_labeled.py: BatchNorm trained and synchronized in the backbone, the FPN and a 4conv1fc
# head), from that run's best checkpoint; everything else as the seed detector's stage beside it.
# What differs and why:
# - the teacher averages the BatchNorm statistics too (MeanTeacherHook skip_buffer=False): with
#   trained BN its weights drift from the statistics it started with (mmdet's default averages
#   the weights only, which suits its frozen-BN detector).
# - no precise BN before evaluation: the teacher's statistics are the average above.
# - the student's supervised BatchNorm sees 1 labeled image per GPU (2 with SyncBN over the 2 GPUs)
#   and its unsupervised one 4 per GPU: the recipe's 1:4 batch of 5, which is what fits a 16 GB GPU
#   at these scales; the SSL recipe's own stage trained BN at 8 per GPU.
_base_ = './soft-teacher_faster-rcnn_r50-mocov2-pre_fpn_2xb5-12e_labeled-unlabeled.py'

start_from = 'best-of://work_dirs/faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_2xb8-ms-36e_labeled'
norm_cfg = dict(type='AnyDeviceSyncBN', requires_grad=True)

model = dict(detector=dict(
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256,
                                 norm_cfg=norm_cfg))))
load_from = start_from
custom_hooks = [*_base_.custom_hooks[:-1],
                dict(type='MeanTeacherHook', momentum=_base_.ema_momentum, skip_buffer=False)]
