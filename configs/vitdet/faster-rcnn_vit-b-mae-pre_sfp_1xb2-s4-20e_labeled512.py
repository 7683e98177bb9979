# Stage 4 of the peer's fine-tuning (its ft_resume_3, AP ~0.320): the whole model,
# layer-wise LR decay 0.7, colour jitter, 20 epochs with a fresh optimizer, warm-up and
# schedule, from stage 3's weights.
_base_ = './faster-rcnn_vit-b-mae-pre_sfp_1xb2-layerdecay-20e_labeled512.py'

# the checkpoint of stage 3 that scored best on validation, in its default work_dir, as the
# peer's jobs started from (weights only: optimizer and schedule start afresh); another
# folder or file with --cfg-options load_from=best-of://DIR or load_from=PATH
prev_stage = 'best-of://work_dirs/faster-rcnn_vit-b-mae-pre_sfp_1xb2-s3-20e_labeled512'

load_from = prev_stage
# every weight comes from stage 3
model = dict(backbone=dict(init_cfg=None))
