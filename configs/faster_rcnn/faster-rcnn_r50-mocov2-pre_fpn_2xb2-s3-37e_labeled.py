# Stage 3 (epochs 28-37, lr 0.0003): resumes stage 2's last checkpoint.
_base_ = './faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py'

# default work_dir of stage 2; with another --work-dir pass `--resume PATH` instead
prev_stage = 'work_dirs/faster-rcnn_r50-mocov2-pre_fpn_2xb2-s2-27e_labeled/epoch_27.pth'

train_cfg = dict(max_epochs=37)
load_from = prev_stage
resume = True
model = dict(backbone=dict(init_cfg=None))
