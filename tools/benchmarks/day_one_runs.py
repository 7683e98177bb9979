"""What gpu_day_one.py runs: each recipe's config, batch and iterations, the order of the steps,
their caps, the table's columns, and the --tiny wrapper configs that make the runs fit a CPU."""
from dataclasses import dataclass

# docs/performance.md, one H200, training steps only (no decoding or augmentation)
H200_MOCO = 'MoCo v2 R50, AMP, batch 32: 986 img/s'
H200_DET_FP32 = 'Faster R-CNN R50-FPN, fp32, batch 2: 24.7-28.3 img/s'
H200_DET_AMP8 = 'Faster R-CNN R50-FPN (standard head, 1333x800), AMP, batch 8: 42.5 img/s'

_TINY_R50_DET = '''
# the CPU demos' scale: R50-FPN at 1333x800 takes ~9 s per image on 2 cores
img_scale = (256, 192)
train_scales = [(256, 154), (256, 192)]  # RandomResize's range (the SSL recipe's demo)
model = dict(train_cfg=dict(rpn_proposal=dict(nms_pre=600, max_per_img=300),
                            rcnn=dict(sampler=dict(num=64))),
             test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=300)))
train_dataloader = dict(dataset=dict(pipeline=[
    dict(p, scale=train_scales if p['type'] == 'RandomResize' else img_scale) if 'scale' in p
    else p for p in _base_.train_pipeline]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(p, scale=img_scale) if 'scale' in p else p for p in _base_.test_pipeline]))
test_dataloader = val_dataloader
'''
# ViT-Tiny (the MAE run's tiny encoder) at 256 px: ViT-B at 512-1024 px is minutes per step here
_TINY_VIT_DET = '''
side = 256
neck = _base_.model.neck
model = dict(
    backbone=dict(img_size=side, {arch}),
    # the feature pyramid takes ViT-Tiny's 192 channels instead of ViT-B's 768
    neck=[dict(n, in_channels=[192] * 4 if isinstance(n['in_channels'], list) else 192)
          for n in neck] if isinstance(neck, list) else dict(neck, in_channels=192),
    train_cfg=dict(rpn_proposal=dict(nms_pre=600, max_per_img=300),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=300)))
sizes = ('scale', 'crop_size', 'size')
train_dataloader = dict(dataset=dict(pipeline=[
    dict(p, **{{k: (side, side) for k in sizes if k in p}}) for p in _base_.train_pipeline]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(p, **{{k: (side, side) for k in sizes if k in p}}) for p in _base_.test_pipeline]))
test_dataloader = val_dataloader
'''
TINY_WRAPPERS = {
    # ViT-Tiny encoder with the MAE demo's small decoder; fp32: AmpOptimWrapper needs a GPU
    'mae': '''
model = dict(backbone=dict(arch='deit-tiny'),
             neck=dict(embed_dim=192, decoder_embed_dim=128, decoder_depth=2,
                       decoder_num_heads=4))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=_base_.optim_wrapper.optimizer,
                     accumulative_counts=_base_.optim_wrapper.accumulative_counts,
                     paramwise_cfg=_base_.optim_wrapper.paramwise_cfg)
''',
    's1': _TINY_R50_DET,
    'ssl': _TINY_R50_DET,
    'vit-s1': _TINY_VIT_DET.format(arch="arch='deit-tiny'"),
    'vitdet': _TINY_VIT_DET.format(
        arch="window_size=8, arch=dict(_delete_=True, embed_dims=192, num_layers=12, num_heads=3, "
             "feedforward_channels=768, global_attn_indexes=[2, 5, 8, 11])"),
}


@dataclass
class Run:
    name: str
    config: str
    batch: int  # per GPU: the config's own
    iters: int  # on the GPU; --tiny: `tiny_iters` at batch 2
    amp: bool = False  # --amp (MAE's config trains with AMP by itself)
    precision: str = 'fp32'
    pretrained: str | None = None  # the run whose checkpoint is --pretrained
    h200: str | None = None  # step-only figure from docs/performance.md
    h200_img_s: tuple = ()  # its img/s, or the range of its repeated runs
    cap_s: float = 75.0  # wall-clock cap on the GPU, start-up included
    tiny_iters: int = 2


RUNS = [
    Run('mocov2', 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py', 32, 200,
        amp=True, precision='AMP', h200=H200_MOCO, h200_img_s=(986, )),
    Run('densecl', 'configs/densecl/densecl_resnet50_4xb32-coslr-200e_unlabeled224.py', 32, 200,
        amp=True, precision='AMP'),
    Run('mae', 'configs/mae/mae_vit-base-p16_4xb64-amp-coslr-80e_unlabeled224.py', 64, 100,
        precision='AMP (config)'),
    Run('s1', 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-s1-23e_labeled.py', 2, 200,
        pretrained='mocov2', h200=H200_DET_FP32, h200_img_s=(24.7, 28.3), tiny_iters=4),
    Run('ssl', 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_2xb8-ms-36e_'
        'labeled.py', 8, 100, amp=True, precision='AMP', pretrained='mocov2', h200=H200_DET_AMP8,
        h200_img_s=(42.5, )),
    Run('vit-s1', 'configs/vitdet/faster-rcnn_vit-b-mae-pre_sfp_1xb2-s1-frozen-20e_labeled512.py',
        2, 150, pretrained='mae'),
    Run('vitdet', 'configs/vitdet/faster-rcnn_vit-b-win-mae-pre_sfp_1xb2-lsj-80e_labeled1024.py',
        2, 100, pretrained='mae', cap_s=90),
]
# the order steps run in: the hand-offs first, the resume check and evaluation on s1 early,
# the runs without a step-only estimate last, where the budget cuts them short
ORDER = ['mocov2', 'densecl', 'mae', 's1', 'resume', 'test', 'infer', 'ssl', 'vit-s1', 'vitdet']
STEP_CAPS = dict(resume=120, test=60, infer=45)
MIN_START_S = 40  # no step starts with less budget left
COLUMNS = ('run', 'config', 'precision', 'batch', 'iterations', 'img/s (with data)',
           'waiting for data', 'peak GPU memory (GiB)', 'GPU util', 'wall (s)',
           'H200 step-only (performance.md)', 'status')
