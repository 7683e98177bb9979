# The demo fine-tuning from a randomly initialized backbone: the baseline MoCo must beat.
_base_ = './faster-rcnn_r50-mocov2-pre_fpn_1xb4-demo-4e_synthetic.py'

model = dict(backbone=dict(init_cfg=None))
