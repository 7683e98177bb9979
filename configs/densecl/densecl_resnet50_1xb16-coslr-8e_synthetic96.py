# CPU demo scale of the DenseCL recipe: the MoCo v2 demo (same data, views, queue, schedule and
# batch) with DenseCL's model, for tools/compare_recipes.py.
_base_ = '../mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py'

model = dict(
    type='DenseCL',
    loss_lambda=0.5,  # global (MoCo) loss x 0.5 + dense loss x 0.5
    neck=dict(_delete_=True, type='DenseCLNeck', in_channels=2048, hid_channels=2048,
              out_channels=128, num_grid=None))
find_unused_parameters = True  # as mmpretrain's DenseCL config
