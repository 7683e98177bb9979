# Stage 2 (epochs 24-27, lr 0.003): resumes stage 1's last checkpoint (weights, SGD momentum,
# epoch counter, LR schedule); the full schedule's first step drops the LR at epoch 23.
_base_ = './faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py'

# default work_dir of stage 1; with another --work-dir pass `--resume PATH` instead
prev_stage = 'work_dirs/faster-rcnn_r50-mocov2-pre_fpn_2xb2-s1-23e_labeled/epoch_23.pth'

train_cfg = dict(max_epochs=27)
load_from = prev_stage
resume = True
# the weights come from stage 1: re-initializing the backbone would be overwritten anyway
model = dict(backbone=dict(init_cfg=None))
