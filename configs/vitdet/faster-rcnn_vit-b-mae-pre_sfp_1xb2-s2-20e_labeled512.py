# Stage 2 of the peer's fine-tuning (its ft_resume_1, AP ~0.294): the whole model,
# layer-wise LR decay 0.7, colour jitter, 20 epochs with a fresh optimizer, warm-up and
# schedule, from stage 1's weights.
_base_ = './faster-rcnn_vit-b-mae-pre_sfp_1xb2-layerdecay-20e_labeled512.py'

# stage 1's last checkpoint in its default work_dir (weights only: optimizer and schedule start
# afresh, as the peer's jobs did); the peer started from stage 1's best-on-validation epoch:
# give that one, or a checkpoint in another work_dir, with --cfg-options load_from=PATH
prev_stage = 'work_dirs/faster-rcnn_vit-b-mae-pre_sfp_1xb2-s1-frozen-20e_labeled512/epoch_20.pth'

load_from = prev_stage
# every weight comes from stage 1
model = dict(backbone=dict(init_cfg=None))
