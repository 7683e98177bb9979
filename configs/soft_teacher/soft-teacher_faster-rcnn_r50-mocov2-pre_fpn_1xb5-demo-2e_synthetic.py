# CPU demo scale of the Soft Teacher stage: the seed detector's demo (faster_rcnn/..._1xb4-demo-
# 4e_synthetic.py: small images, fewer proposals) continued on the generated labeled and
# unlabeled images, 1 labeled : 4 unlabeled per batch as the real stage.
_base_ = ['./soft-teacher_faster-rcnn_r50-mocov2-pre_fpn_2xb5-12e_labeled-unlabeled.py',
          '../_base_/synthetic_demo.py']  # what the demos share (demo_* names)

data_root = 'data/synthetic/labeled'
unlabeled_root = 'data/synthetic/unlabeled'
start_from = 'work_dirs/faster-rcnn_r50-mocov2-pre_fpn_1xb4-demo-4e_synthetic/epoch_4.pth'
lr = 0.0005  # the demo detector's last LR (0.005 after its x0.1 step)
max_epochs = 2
warmup_iters = 10
# the demo detector's size (the generated images are 160-320 px), as a range for the branches
train_scales = [(256, 160), (256, 224)]
num_workers = 2

model = dict(detector=_base_.demo_proposals)  # the detector demo's proposal and RoI counts
load_from = start_from

_scaled = dict(type='RandomResize', scale=train_scales, keep_ratio=True)
labeled_dataset = _base_.labeled_dataset
labeled_dataset.data_root = data_root
labeled_dataset.pipeline = [*_base_.sup_pipeline[:2], _scaled, *_base_.sup_pipeline[3:]]
unlabeled_dataset = _base_.unlabeled_dataset
unlabeled_dataset.data_root = unlabeled_root
unlabeled_dataset.pipeline = [*_base_.unsup_pipeline[:2], dict(
    type='MultiBranch', branch_field=_base_.branch_field,
    unsup_teacher=[_scaled, *_base_.weak_pipeline[1:]],
    unsup_student=[_scaled, *_base_.strong_pipeline[1:]])]
train_dataloader = dict(num_workers=num_workers,
                        dataset=dict(datasets=[labeled_dataset, unlabeled_dataset]))
test_dataloader = dict(batch_size=4, num_workers=num_workers, dataset=dict(
    data_root=data_root, pipeline=[
        _base_.load_image,
        dict(type='Resize', scale=(256, 192), keep_ratio=True),  # the detector demo's scale
        *_base_.test_pipeline[-2:]]))
optim_wrapper = dict(optimizer=dict(lr=lr), clip_grad=_base_.demo_clip_grad)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[max_epochs],
         gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs)
# no validation inside training, as the detector's demo: tools/test.py evaluates afterwards
val_dataloader = val_evaluator = val_cfg = None
auto_scale_lr = dict(enable=False)
default_hooks = dict(logger=dict(interval=5),
                     checkpoint=dict(interval=max_epochs, save_best=None))
