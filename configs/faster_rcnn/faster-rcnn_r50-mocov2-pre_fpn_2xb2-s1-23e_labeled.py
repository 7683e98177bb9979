# Stage 1 of the seed's schedule (epochs 1-23, lr 0.03), one 24-hour job on 2 V100-class GPUs.
# Same schedule as the full config, stopped early, so s1 -> s2 -> s3 equals one 37-epoch run.
_base_ = './faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py'

train_cfg = dict(max_epochs=23)
