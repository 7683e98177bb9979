# DenseCL ResNet-50 on the unlabeled 224x224 PNG folder: our MoCo v2 recipe (data, two-view
# augmentation, 4 GPUs x 32, lr 0.015, 200-epoch cosine stopped at epoch 100, time-limit
# continuation) with DenseCL's model: a second, dense projection head whose loss contrasts
# matched locations of the two views (weight 0.5), <1% more compute (Wang et al., CVPR 2021;
# mmpretrain's densecl_resnet50_8xb32-coslr-200e_in1k). Its keep_epoch_100.pth goes to both
# detection recipes with --pretrained, as a MoCo checkpoint does.
_base_ = '../mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py'

model = dict(
    type='DenseCL',
    loss_lambda=0.5,  # global (MoCo) loss x 0.5 + dense loss x 0.5
    neck=dict(_delete_=True, type='DenseCLNeck', in_channels=2048, hid_channels=2048,
              out_channels=128, num_grid=None))
find_unused_parameters = True  # as mmpretrain's DenseCL config
