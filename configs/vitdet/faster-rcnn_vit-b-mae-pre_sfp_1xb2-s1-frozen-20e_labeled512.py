# Stage 1 of the peer's fine-tuning (its ft_freeze, AP ~0.151): the MAE backbone frozen, the
# feature pyramid and heads trained for 20 epochs. s2 continues from its best on validation.
_base_ = './faster-rcnn_vit-b-mae-pre_sfp_1xb2-layerdecay-20e_labeled512.py'

lr_step = 6  # StepLR(step_size=6) over 20 epochs: x0.1 at epochs 6, 12 and 18

# every block, the embeddings and the final norm get no gradient (drop-path still runs in
# training mode, as in the peer's frozen backbone)
model = dict(backbone=dict(frozen_stages=12))
train_pipeline = [  # no colour jitter in this stage
    _base_.load_image,
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(_base_.img_size, _base_.img_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
# weight decay 0.01 on every trained tensor, norms and biases too, as the peer's stage 1 (layer
# decay changes nothing here: only the neck and heads train, at the full LR)
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=1., bias_decay_mult=1.))
param_scheduler = [
    _base_.param_scheduler[0],
    dict(type='StepLR', step_size=lr_step, gamma=0.1, by_epoch=True, begin=0,
         end=_base_.max_epochs),
]
