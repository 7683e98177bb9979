# The same recipe with the cosine schedule compressed into 100 epochs (half the compute).
_base_ = './mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py'

max_epochs = 100
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs)
]
train_cfg = dict(max_epochs=max_epochs)
