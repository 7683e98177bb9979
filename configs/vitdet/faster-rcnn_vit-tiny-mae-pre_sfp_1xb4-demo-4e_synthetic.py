# CPU demo scale of the ViT fine-tuning, paired with configs/mae/mae_vit-tiny-p16_1xb16-coslr-8e_
# synthetic96.py: the whole-model recipe (layer decay 0.7, colour jitter, square resize, simple
# feature pyramid) with a ViT-Tiny on the generated dataset, in the budget of the R50 demo
# (configs/faster_rcnn/*_1xb4-demo-4e_synthetic.py: 4 epochs of batch 4, the same proposal counts).
_base_ = ['./faster-rcnn_vit-b-mae-pre_sfp_1xb2-layerdecay-20e_labeled512.py',
          '../_base_/synthetic_demo.py']  # what the demos share (demo_* names)

data_root = 'data/synthetic/labeled'
batch_size = 4
lr = 2e-4
max_epochs = 4
lr_step = 3  # x0.1 for the last epoch, as the R50 demo
warmup_iters = 50
img_size = 256  # the generated images are 160-320 px
embed_dims = 192  # ViT-Tiny
num_workers = 2

model = dict(
    backbone=dict(arch='deit-tiny', img_size=img_size),
    neck=[
        dict(type='SimpleFeaturePyramid', in_channels=embed_dims),
        dict(type='FPN', in_channels=[embed_dims] * 4, out_channels=256, num_outs=5,
             norm_cfg=dict(type='mmpretrain.LN2d', eps=1e-6)),
    ],
    **_base_.demo_proposals)  # the R50 demo's proposal and RoI counts

# the recipe's pipelines at the demo's size
train_dataloader = dict(batch_size=batch_size, num_workers=num_workers, dataset=dict(
    data_root=data_root, pipeline=[
        *_base_.train_pipeline[:3],
        dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
        *_base_.train_pipeline[4:]]))
test_dataloader = dict(batch_size=4, num_workers=num_workers, dataset=dict(
    data_root=data_root, pipeline=[
        _base_.load_image,
        dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
        *_base_.test_pipeline[-2:]]))

optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.067, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='StepLR', step_size=lr_step, gamma=0.1, by_epoch=True, begin=0, end=max_epochs),
]
train_cfg = dict(max_epochs=max_epochs)
# no validation inside training: tools/test.py evaluates afterwards
val_dataloader = val_evaluator = val_cfg = None
auto_scale_lr = dict(enable=False)
default_hooks = dict(logger=dict(interval=5),
                     checkpoint=dict(interval=max_epochs, save_best=None))
