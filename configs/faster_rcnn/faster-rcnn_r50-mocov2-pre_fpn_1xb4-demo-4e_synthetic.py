# CPU demo scale (make demo): the real model and recipe on the generated dataset, with small
# images and fewer proposals / sampled RoIs (measured here: 3.4 -> 1.9 s per batch of 4).
_base_ = ['./faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py',
          '../_base_/synthetic_demo.py']  # what the demos share (demo_* names)

data_root = 'data/synthetic/labeled'
batch_size = 4
lr = 0.005  # 0.01 diverged from the 2-minute MoCo backbone here (AP 0.004; make demo: 0.148)
max_epochs = 4
lr_steps = [3]
warmup_iters = 50
img_scale = (256, 192)  # the generated images are 160-320 px
num_workers = 2

model = _base_.demo_proposals  # fewer proposals and sampled RoIs for the small images

# the recipe's pipelines, resized to the demo's scale
train_dataloader = dict(batch_size=batch_size, num_workers=num_workers, dataset=dict(
    data_root=data_root, pipeline=[
        *_base_.train_pipeline[:2],
        dict(type='Resize', scale=img_scale, keep_ratio=True),
        *_base_.train_pipeline[3:]]))
test_dataloader = dict(batch_size=4, num_workers=num_workers, dataset=dict(
    data_root=data_root, pipeline=[
        _base_.load_image,
        dict(type='Resize', scale=img_scale, keep_ratio=True),
        *_base_.test_pipeline[-2:]]))

# a backbone from a 2-minute MoCo run gives large activations: clip to keep the first steps sane
optim_wrapper = dict(optimizer=dict(lr=lr), clip_grad=_base_.demo_clip_grad)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=lr_steps,
         gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs)
# no validation inside training: make demo evaluates with tools/test.py afterwards
val_dataloader = val_evaluator = val_cfg = None
auto_scale_lr = dict(enable=False)
default_hooks = dict(logger=dict(interval=5),
                     checkpoint=dict(interval=max_epochs, save_best=None))
