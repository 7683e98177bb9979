# CPU demo scale of the SSL fine-tuning recipe, on the budget of the seed recipe's demo
# (faster-rcnn_r50-mocov2-pre_fpn_1xb4-demo-4e_synthetic.py: 4 epochs of the generated
# training set, the same image sizes, proposals and sampled RoIs), for tools/compare_recipes.py.
_base_ = ['./faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_2xb8-ms-36e_labeled.py',
          '../_base_/synthetic_demo.py']  # what the demos share (demo_* names)

data_root = 'data/synthetic/labeled'
batch_size = 8
lr = 0.01  # the seed demo's 0.005 at 4 images, scaled linearly
max_epochs = 4
lr_steps = [3]
warmup_iters = 25  # the seed demo's 50 steps of 4 images, as steps of 8
precise_bn_iters = 5  # a quarter of the 20 batches of an epoch (200 would be all of them)
img_scale = (256, 192)  # the seed demo's test size; training samples shorter sides 154-192
train_scales = [(256, 154), (256, 192)]
num_workers = 2

model = _base_.demo_proposals  # the seed demo's proposal and RoI counts

# the recipe's pipelines at the demo's scales
train_dataloader = dict(batch_size=batch_size, num_workers=num_workers, dataset=dict(
    data_root=data_root, pipeline=[
        *_base_.train_pipeline[:2],
        dict(type='RandomResize', scale=train_scales, keep_ratio=True),
        *_base_.train_pipeline[3:]]))
test_dataloader = dict(batch_size=4, num_workers=num_workers, dataset=dict(
    data_root=data_root, pipeline=[
        _base_.load_image,
        dict(type='Resize', scale=img_scale, keep_ratio=True),
        *_base_.test_pipeline[-2:]]))

# as the seed demo: a backbone from a 2-minute pretraining gives large activations at first
optim_wrapper = dict(optimizer=dict(lr=lr), clip_grad=_base_.demo_clip_grad)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=lr_steps,
         gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs)
# no validation inside training: tools/compare_recipes.py evaluates with tools/test.py
val_dataloader = val_evaluator = val_cfg = None
auto_scale_lr = dict(enable=False)
custom_hooks = [*_base_.custom_hooks[:-1],
                dict(type='PreciseBNHook', num_iters=precise_bn_iters)]
default_hooks = dict(logger=dict(interval=5),
                     checkpoint=dict(interval=max_epochs, save_best=None))
