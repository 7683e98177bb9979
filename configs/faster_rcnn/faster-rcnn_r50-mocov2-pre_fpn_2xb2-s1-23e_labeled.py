# Stage 1 of the seed's schedule (epochs 1-23, lr 0.03): the seed cut its 37 epochs into
# 24-hour jobs on 2 V100s (GPUs these pins do not support: docs/install.md).
# Same schedule as the full config, stopped early, so s1 -> s2 -> s3 equals one 37-epoch run.
_base_ = './faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py'

train_cfg = dict(max_epochs=23)
