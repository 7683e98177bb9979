"""The real configs carry the seed's recipe (/work/shared/reference/seed-recipe.md), number for
number: MoCo v2 pretraining (mocov2 4xb32 200e, stopped at epoch 100) and the Faster R-CNN
fine-tuning (step-37e and its s1/s2/s3 stages). A config edit, or a base config from a new
mmpretrain/mmdet release, that moves one of these numbers away from what the seed ran fails here.

Where a config value has a non-obvious meaning (MoCo's ``momentum``, frozen BatchNorm,
auto_scale_lr) the test checks what the built object or the runner actually does with it."""
import os

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, PARAM_SCHEDULERS, TRANSFORMS, init_default_scope
from mmengine.runner import Runner

import custom_modules  # noqa: F401  (registers the custom types the configs name)
from helpers import REPO


MOCO = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py')
DET = {s: os.path.join(REPO, f'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-{s}_labeled.py')
       for s in ('step-37e', 's1-23e', 's2-27e', 's3-37e')}
WORK_DIR = 'work_dirs/faster-rcnn_r50-mocov2-pre_fpn_2xb2-{}_labeled/'


@pytest.fixture(scope='module')
def moco_cfg():
    import custom_modules.datasets.transforms.moco  # noqa: F401  (the MoCo config's custom_imports)
    return Config.fromfile(MOCO)


@pytest.fixture(scope='module')
def det_cfgs():
    return {s: Config.fromfile(p) for s, p in DET.items()}


def build(cfg, model_cfg=None):
    init_default_scope(cfg.default_scope)
    return MODELS.build(model_cfg if model_cfg is not None else cfg.model)


def lrs_per_epoch(cfg, sched, epochs):
    """LR at the start of each epoch from the config's (epoch-based) scheduler, on the config's
    optimizer: the schedule itself, not our reading of its arguments."""
    init_default_scope(cfg.default_scope)
    wrapper = build_optim_wrapper(nn.Linear(1, 1), cfg.optim_wrapper)
    s = PARAM_SCHEDULERS.build(dict(sched, optimizer=wrapper))
    out = []
    for _ in range(epochs):
        out.append(wrapper.optimizer.param_groups[0]['lr'])
        wrapper.step()  # no grads: a no-op, in the order the scheduler expects
        s.step()
    return out


# ---------------------------------------------------------------- MoCo v2 pretraining

def test_moco_model_recipe(moco_cfg):
    m = moco_cfg.model
    assert m.type == 'MoCo'
    assert m.queue_len == 65536 and m.feat_dim == 128
    assert m.head.type == 'ContrastiveHead' and m.head.temperature == 0.2
    assert m.neck == dict(type='MoCoV2Neck', in_channels=2048, hid_channels=2048,
                          out_channels=128, with_avg_pool=True)  # --mlp
    assert m.backbone.type == 'ResNet' and m.backbone.depth == 50


def test_moco_built_model_queue_neck_and_key_momentum(moco_cfg):
    """mmpretrain's ``momentum=0.001`` is the EMA step: key <- 0.999 key + 0.001 query (the seed's
    --moco-m 0.999). Checked on the real loss path, where the update happens."""
    torch.manual_seed(0)
    model = build(moco_cfg).train()
    assert model.queue.shape == (128, 65536)
    assert model.head.temperature == 0.2
    linears = [l for l in model.neck.modules() if isinstance(l, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(2048, 2048), (2048, 128)]
    assert model.encoder_k.interval == 1  # updated every iteration

    imgs = [torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)]
    model.loss(imgs, [])  # the EMA's first update copies query -> key
    assert int(model.queue_ptr) == 2
    query = nn.Sequential(model.backbone, model.neck)
    with torch.no_grad():
        for p in query.parameters():
            p.add_(1.0)  # query = key + 1
    key_before = {k: v.clone() for k, v in model.encoder_k.module.named_parameters()}
    model.loss(imgs, [])
    for k, v in model.encoder_k.module.named_parameters():
        # 0.999 key + 0.001 (key + 1) = key + 0.001; momentum 0.01 or 0.999 would be far off
        torch.testing.assert_close(v - key_before[k], torch.full_like(v, 0.001),
                                   atol=2e-5, rtol=0, msg=k)
    assert int(model.queue_ptr) == 4


def test_moco_optimizer_and_schedule(moco_cfg):
    c = moco_cfg
    assert c.optim_wrapper.optimizer == dict(type='SGD', lr=0.015, momentum=0.9,
                                             weight_decay=1e-4)
    assert c.auto_scale_lr == dict(enable=True, base_batch_size=128)  # lr 0.015 is for 4 x 32
    assert c.train_dataloader.batch_size == 32
    assert c.param_scheduler == [dict(type='CosineAnnealingLR', T_max=200, by_epoch=True,
                                      begin=0, end=200)]
    # the seed used epoch 100 of the 200-epoch cosine schedule: stop there, do not compress it
    assert c.train_cfg.max_epochs == 100
    lrs = lrs_per_epoch(c, c.param_scheduler[0], 101)
    assert lrs[0] == pytest.approx(0.015, rel=1e-12)
    assert lrs[100] == pytest.approx(0.0075, rel=1e-9)  # half-way down the cosine at the stop


def test_moco_aug_plus_views(moco_cfg):
    """MoCo v2 --aug-plus, as built (the cv2 variants keep the seed's parameters)."""
    init_default_scope(moco_cfg.default_scope)
    pipeline = moco_cfg.train_dataloader.dataset.pipeline
    assert [t.type for t in pipeline] == ['LoadImageNamed', 'MultiView', 'PackInputs']
    mv = TRANSFORMS.build(pipeline[1])
    assert mv.num_views == [2] and len(mv.pipelines) == 1  # two views of the same pipeline
    crop, jitter, gray, blur, flip = mv.pipelines[0].transforms
    assert type(crop).__name__ == 'RandomResizedCrop'
    assert crop.scale == (224, 224) and crop.crop_ratio_range == (0.2, 1.0)
    assert crop.aspect_ratio_range == pytest.approx((3 / 4, 4 / 3))  # torchvision's default
    assert type(jitter).__name__ == 'RandomApply' and jitter.prob == 0.8
    (cj,) = jitter.transforms.transforms
    assert type(cj).__name__ == 'ColorJitter'
    # 0.4/0.4/0.4 become factor ranges 1 +- 0.4; hue 0.1 -> +-0.1
    assert (cj.brightness, cj.contrast, cj.saturation, cj.hue) == (
        (0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
    assert 'Grayscale' in type(gray).__name__ and gray.prob == 0.2 and gray.keep_channels
    assert 'GaussianBlur' in type(blur).__name__
    assert blur.magnitude_range == (0.1, 2.0) and blur.prob == 0.5 and blur.radius is None
    assert type(flip).__name__ == 'RandomFlip'
    assert flip.prob == 0.5 and flip.direction == 'horizontal'


# ---------------------------------------------------------------- Faster R-CNN fine-tuning

@pytest.mark.parametrize('stage', list(DET))
def test_det_optimizer_and_schedule(det_cfgs, stage):
    c = det_cfgs[stage]
    assert c.optim_wrapper.type == 'OptimWrapper'
    assert c.optim_wrapper.optimizer == dict(type='SGD', lr=0.03, momentum=0.9, weight_decay=1e-4)
    assert c.train_dataloader.batch_size == 2  # x 2 GPUs = the seed's total 4
    assert c.auto_scale_lr == dict(enable=True, base_batch_size=4)
    # every stage runs the one 37-epoch schedule; only where it stops differs
    assert c.param_scheduler == [
        dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
        dict(type='MultiStepLR', begin=0, end=37, by_epoch=True, milestones=[23, 27], gamma=0.1),
    ]


def test_det_lr_per_epoch_matches_the_seed_jobs(det_cfgs):
    """r1: 0.03 for epochs 0-22, r2: 0.003 for 23-26, r3: 0.0003 for 27-36."""
    c = det_cfgs['step-37e']
    lrs = lrs_per_epoch(c, c.param_scheduler[1], 37)
    expected = [0.03] * 23 + [0.003] * 4 + [0.0003] * 10
    assert lrs == pytest.approx(expected, rel=1e-9)


def test_det_warmup(det_cfgs):
    """torchvision's engine: LR factor 1/1000 rising linearly to 1 over the first 1000 iterations."""
    c = det_cfgs['step-37e']
    init_default_scope(c.default_scope)
    wrapper = build_optim_wrapper(nn.Linear(1, 1), c.optim_wrapper)
    s = PARAM_SCHEDULERS.build(dict(c.param_scheduler[0], optimizer=wrapper))
    lrs = []
    for _ in range(1001):
        lrs.append(wrapper.optimizer.param_groups[0]['lr'])
        wrapper.step()
        s.step()
    # mmengine's LinearLR spans end - begin - 1 = 999 steps: factor 0.001 * (t + 1), full LR at
    # iteration 999 (torchvision: 0.001 + 0.999 t / 1000, full at 1000; at most 0.1 % apart)
    assert lrs[0] == pytest.approx(0.03e-3, rel=1e-9)
    assert lrs[500] == pytest.approx(0.03 * 0.501, rel=1e-9)
    assert lrs[998] == pytest.approx(0.03 * 0.999, rel=1e-9)
    assert lrs[999] == pytest.approx(0.03, rel=1e-9) and lrs[1000] == pytest.approx(0.03, rel=1e-9)


def test_det_stages_stop_and_chain(det_cfgs):
    assert det_cfgs['step-37e'].train_cfg.max_epochs == 37
    s1, s2, s3 = det_cfgs['s1-23e'], det_cfgs['s2-27e'], det_cfgs['s3-37e']
    assert (s1.train_cfg.max_epochs, s2.train_cfg.max_epochs, s3.train_cfg.max_epochs) == (23, 27, 37)
    assert not s1.get('resume', False) and s1.get('load_from') is None
    # s2/s3 resume (weights, optimizer, epoch, schedule) the previous stage's last checkpoint
    assert s2.resume is True and s2.load_from == WORK_DIR.format('s1-23e') + 'epoch_23.pth'
    assert s3.resume is True and s3.load_from == WORK_DIR.format('s2-27e') + 'epoch_27.pth'


@pytest.mark.parametrize('stage', list(DET))
def test_det_model_and_pipeline(det_cfgs, stage):
    c = det_cfgs[stage]
    b = c.model.backbone
    assert b.type == 'ResNet' and b.depth == 50
    assert b.frozen_stages == -1  # all 5 stages trainable, stem included
    assert b.norm_cfg == dict(type='BN', requires_grad=False) and b.norm_eval is True
    assert c.model.train_cfg.rpn_proposal.max_per_img == 2000
    assert c.model.roi_head.bbox_roi_extractor.roi_layer.sampling_ratio == 2
    assert c.model.roi_head.bbox_roi_extractor.roi_layer.output_size == 7
    assert c.model.roi_head.bbox_head.num_classes == 100
    train = {t.type: t for t in c.train_dataloader.dataset.pipeline}
    assert train['Resize'].scale == (1333, 800) and train['Resize'].keep_ratio is True
    assert train['RandomFlip'].prob == 0.5
    assert [t.type for t in c.train_dataloader.dataset.pipeline] == [
        'LoadImageNamed', 'LoadAnnotations', 'Resize', 'RandomFlip', 'PackDetInputs']
    test = {t.type: t for t in c.val_dataloader.dataset.pipeline}
    assert test['Resize'].scale == (1333, 800) and test['Resize'].keep_ratio is True


@pytest.fixture(scope='module')
def detector(det_cfgs):
    c = det_cfgs['step-37e']
    model_cfg = c.model.copy()
    model_cfg.backbone.init_cfg = None  # no checkpoint: random weights are enough here
    torch.manual_seed(0)
    return c, build(c, model_cfg)


def test_det_built_model(detector):
    _, model = detector
    # convolutions (4-D) all train, stem included; BatchNorm affine parameters (1-D) get no grad
    assert all(p.requires_grad == (p.ndim == 4) for p in model.backbone.parameters())
    assert model.train_cfg.rpn_proposal.max_per_img == 2000
    assert model.roi_head.bbox_roi_extractor.roi_layers[0].sampling_ratio == 2
    assert model.roi_head.bbox_head.fc_cls.out_features == 101  # 100 + background
    assert model.roi_head.bbox_head.fc_reg.out_features == 400  # class-specific boxes


def test_det_train_step_keeps_batchnorm_frozen(detector):
    """One real training step (data preprocessor, losses, the config's SGD): backbone BatchNorm
    statistics and affine parameters stay put, convolutions learn."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData

    c, model = detector
    model.train()
    bns = {n: m for n, m in model.backbone.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(bns) == 53  # every BN of a ResNet-50
    assert not any(m.training for m in bns.values())  # norm_eval: eval mode under train()
    before = {n: [t.clone() for t in (m.running_mean, m.running_var, m.weight, m.bias)]
              for n, m in bns.items()}
    conv_before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()
                   if p.ndim == 4}

    torch.manual_seed(0)
    samples = []
    for label in (3, 57):
        s = DetDataSample(metainfo=dict(img_shape=(96, 128), ori_shape=(96, 128),
                                        scale_factor=(1.0, 1.0), flip=False))
        s.gt_instances = InstanceData(
            bboxes=HorizontalBoxes(torch.tensor([[10., 12., 90., 80.]])),
            labels=torch.tensor([label]))
        samples.append(s)
    data = dict(inputs=[torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)
    init_default_scope(c.default_scope)
    wrapper = build_optim_wrapper(model, c.optim_wrapper)
    losses = model.train_step(data, wrapper)
    assert all(torch.isfinite(v).all() for v in losses.values())

    for n, m in bns.items():
        after = (m.running_mean, m.running_var, m.weight, m.bias)
        for name, b, a in zip(('running_mean', 'running_var', 'weight', 'bias'), before[n], after):
            assert torch.equal(a, b), f'{n}.{name} changed'
    changed = [n for n, p in model.backbone.named_parameters()
               if p.ndim == 4 and not torch.equal(p, conv_before[n])]
    assert 'conv1.weight' in changed  # the stem trains too (frozen_stages -1)
    assert len(changed) == len(conv_before)


# ---------------------------------------------------------------- auto_scale_lr

def runner_lr(cfg, gpus, per_gpu):
    """The LR after mmengine's own Runner.scale_lr, on a Runner that skips __init__: scale_lr
    reads the world size from Runner.world_size (set from get_dist_info() in __init__)."""
    init_default_scope(cfg.default_scope)
    runner = Runner.__new__(Runner)
    runner._world_size = gpus
    runner._train_dataloader = dict(cfg.train_dataloader, batch_size=per_gpu)
    runner.param_schedulers = cfg.param_scheduler  # unbuilt, as when the runner calls it
    runner.logger = MMLogger.get_instance('test_recipe')
    wrapper = build_optim_wrapper(nn.Linear(1, 1), cfg.optim_wrapper)
    runner.scale_lr(wrapper, cfg.auto_scale_lr)
    return wrapper.optimizer.param_groups[0]['lr']


@pytest.mark.parametrize('gpus,per_gpu,expected', [
    (1, 2, 0.015), (2, 2, 0.03), (4, 2, 0.06), (4, 32, 0.96)])
def test_det_auto_scale_lr(det_cfgs, gpus, per_gpu, expected):
    assert runner_lr(det_cfgs['step-37e'], gpus, per_gpu) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize('gpus,per_gpu,expected', [
    (1, 2, 0.000234375), (2, 2, 0.00046875), (4, 2, 0.0009375), (4, 32, 0.015)])
def test_moco_auto_scale_lr(moco_cfg, gpus, per_gpu, expected):
    assert runner_lr(moco_cfg, gpus, per_gpu) == pytest.approx(expected, rel=1e-12)


# ================================================================ the peer's recipe: MAE ViT-B
# pretraining and the ViT Faster R-CNN (configs/mae, configs/vitdet), pinned to what the peer's
# scripts ran (/work/shared/reference/peer-recipe.md; hmdliu/DL-SP22-Team2 main_pretrain.py,
# main_finetune.py, configs/ft_*.yaml, utils.get_params, transforms.Jitter). Behaviour (layer
# decay groups, frozen stage, MAE -> ViT loading) is tested in tests/recipes/test_mae_vitdet.py.

MAE = os.path.join(REPO, 'configs/mae/mae_vit-base-p16_4xb64-amp-coslr-80e_unlabeled224.py')
VITDET = {s: os.path.join(REPO, 'configs/vitdet/faster-rcnn_vit-b-mae-pre_sfp_1xb2-'
                          f'{s}_labeled512.py')
          for s in ('layerdecay-20e', 's1-frozen-20e', 's2-20e', 's3-20e', 's4-20e')}
VITDET_BEST_OF = 'best-of://work_dirs/faster-rcnn_vit-b-mae-pre_sfp_1xb2-{}_labeled512'


def scheduled_lrs(cfg, schedulers, epochs, epoch_length=1):
    """The LR at the start of each epoch from the config's schedulers on its optimizer (plain
    parameter groups: the layer-decay constructor needs a detector)."""
    init_default_scope(cfg.default_scope)
    wrapper = build_optim_wrapper(nn.Linear(1, 1), dict(type='OptimWrapper',
                                                        optimizer=cfg.optim_wrapper.optimizer))
    built = []
    for s in schedulers:
        args = {k: v for k, v in s.items() if k not in ('type', 'convert_to_iter_based')}
        if s.get('convert_to_iter_based'):
            built.append(PARAM_SCHEDULERS.get(s.type).build_iter_from_epoch(
                wrapper, epoch_length=epoch_length, **args))
        else:
            built.append(PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper)))
    lrs = []
    for i in range(epochs * epoch_length):
        if i % epoch_length == 0:
            lrs.append(wrapper.optimizer.param_groups[0]['lr'])
        wrapper.step()
        for s in built:
            if not s.by_epoch or (i + 1) % epoch_length == 0:
                s.step()
    return lrs


@pytest.fixture(scope='module')
def mae_cfg():
    import custom_modules.datasets.unlabeled  # noqa: F401  (the MAE config's custom_imports)
    return Config.fromfile(MAE)


@pytest.fixture(scope='module')
def vitdet_cfgs():
    return {s: Config.fromfile(p) for s, p in VITDET.items()}


def test_mae_model_recipe(mae_cfg):
    m = mae_cfg.model
    assert m.type == 'MAE'
    assert (m.backbone.type, m.backbone.arch, m.backbone.patch_size) == ('MAEViT', 'b', 16)
    assert m.backbone.get('img_size', 224) == 224 and m.backbone.mask_ratio == 0.75
    assert (m.neck.decoder_embed_dim, m.neck.decoder_depth, m.neck.decoder_num_heads) == (
        512, 8, 16)
    assert m.head.norm_pix is False  # the peer never set --norm_pix_loss
    assert mae_cfg.data_preprocessor.mean == [123.675, 116.28, 103.53]
    assert mae_cfg.data_preprocessor.std == [58.395, 57.12, 57.375]
    crop = mae_cfg.train_dataloader.dataset.pipeline[1]
    assert (crop.type, crop.scale, crop.crop_ratio_range, crop.interpolation) == (
        'RandomResizedCrop', 224, (0.2, 1.0), 'bicubic')
    assert mae_cfg.train_dataloader.dataset.pipeline[2] == dict(type='RandomFlip', prob=0.5)


def test_mae_optimizer_and_schedule(mae_cfg):
    """4 GPUs x 64, 2 iterations accumulated (512 per update), lr 1.5e-4 x 512 / 256, AdamW
    (0.9, 0.95), weight decay 0.05 except 1-D tensors, mixed precision in bfloat16 where the GPU
    has it (the peer's fp16 otherwise); 20 warm-up epochs, then a half cosine to 1e-8 at epoch
    200, stopped after epoch 80."""
    import math
    c = mae_cfg
    assert c.optim_wrapper.type == 'MixedPrecisionOptimWrapper' and c.optim_wrapper.dtype == 'auto'
    assert c.optim_wrapper.loss_scale == 'dynamic'
    assert c.optim_wrapper.accumulative_counts == 2
    assert c.optim_wrapper.optimizer == dict(type='AdamW', lr=3e-4, betas=(0.9, 0.95),
                                             weight_decay=0.05)
    assert c.optim_wrapper.paramwise_cfg == dict(flat_decay_mult=0.)
    assert c.train_dataloader.batch_size == 64
    assert c.train_dataloader.batch_sampler.drop_last is True
    assert c.auto_scale_lr == dict(enable=True, base_batch_size=256)
    assert c.train_cfg.max_epochs == 80
    # per iteration as in a run (convert_to_iter_based), here with 100 iterations per epoch
    lrs = scheduled_lrs(c, c.param_scheduler, 200, epoch_length=100)
    # the peer's linear warm-up, lr * epoch / 20 (mmengine's reaches the full LR one step early)
    assert lrs[0] < 1e-7 and lrs[10] == pytest.approx(3e-4 * 10 / 20, rel=1e-3)
    assert lrs[20] == pytest.approx(3e-4, rel=1e-9)
    # the peer's half cosine: 1e-8 + (3e-4 - 1e-8) * (1 + cos(pi (e - 20) / 180)) / 2
    for e in (50, 80, 199):
        expected = 1e-8 + (3e-4 - 1e-8) * (1 + math.cos(math.pi * (e - 20) / 180)) / 2
        assert lrs[e] == pytest.approx(expected, rel=1e-9), e


@pytest.mark.parametrize('stage', list(VITDET))
def test_vitdet_model_and_pipeline(vitdet_cfgs, stage):
    c = vitdet_cfgs[stage]
    b = c.model.backbone
    assert (b.type, b.arch, b.img_size, b.patch_size) == ('mmpretrain.VisionTransformer', 'b',
                                                          512, 16)
    assert b.drop_path_rate == 0.1 and b.out_type == 'featmap'
    assert b.get('with_cls_token', True) and b.get('final_norm', True)  # timm's ViT, as the peer
    assert b.get('frozen_stages', -1) == (12 if stage.startswith('s1') else -1)
    pyramid, fpn = c.model.neck
    assert pyramid == dict(type='SimpleFeaturePyramid', in_channels=768)
    assert fpn == dict(type='FPN', in_channels=[768] * 4, out_channels=256, num_outs=5,
                       norm_cfg=dict(type='mmpretrain.LN2d', eps=1e-6))
    anchors = c.model.rpn_head.anchor_generator  # sizes 32-512, one per level
    assert (anchors.scales, anchors.ratios, anchors.strides) == ([8], [0.5, 1.0, 2.0],
                                                                  [4, 8, 16, 32, 64])
    roi = c.model.roi_head
    roi_layer = roi.bbox_roi_extractor.roi_layer
    assert (roi_layer.output_size, roi_layer.sampling_ratio, roi.bbox_head.roi_feat_size) == (
        8, 2, 8)
    assert roi.bbox_head.num_classes == 100
    assert c.model.data_preprocessor.mean == [123.675, 116.28, 103.53]  # ImageNet, RGB
    assert c.model.data_preprocessor.std == [58.395, 57.12, 57.375]
    assert c.model.data_preprocessor.bgr_to_rgb is True
    train = [t.type for t in c.train_dataloader.dataset.pipeline]
    jitter = [] if stage.startswith('s1') else ['mmpretrain.ColorJitter']
    assert train == ['LoadImageNamed', 'LoadAnnotations', *jitter, 'Resize', 'RandomFlip',
                     'PackDetInputs']
    steps = {t.type: t for t in c.train_dataloader.dataset.pipeline}
    if jitter:  # ColorJitter(brightness=[0.1, 2], contrast=[0.1, 2], saturation=[0.1, 2], hue=0.1)
        cj = steps['mmpretrain.ColorJitter']
        assert (cj.brightness, cj.contrast, cj.saturation, cj.hue) == (
            (0.1, 2.0), (0.1, 2.0), (0.1, 2.0), (-0.1, 0.1))
    assert steps['Resize'].scale == (512, 512) and steps['Resize'].keep_ratio is False
    assert steps['RandomFlip'].prob == 0.5
    test = {t.type: t for t in c.val_dataloader.dataset.pipeline}
    assert test['Resize'].scale == (512, 512) and test['Resize'].keep_ratio is False


@pytest.mark.parametrize('stage', list(VITDET))
def test_vitdet_optimizer_and_schedule(vitdet_cfgs, stage):
    """AdamW lr 1e-4 (torch's weight decay 0.01), batch 2, warm-up from 0.067 over 8000
    iterations in every stage, StepLR x0.1 every 6 epochs (stage 1) or 10 (stages 2-4), 20
    epochs; layer decay 0.7 with no decay on norms and biases in the whole-model stages."""
    c = vitdet_cfgs[stage]
    assert c.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=0.01)
    assert c.optim_wrapper.constructor == 'ViTLayerDecayOptimWrapperConstructor'
    p = c.optim_wrapper.paramwise_cfg
    assert p.layer_decay_rate == 0.7
    frozen = stage.startswith('s1')
    assert (p.norm_decay_mult, p.bias_decay_mult) == ((1., 1.) if frozen else (0., 0.))
    assert c.train_dataloader.batch_size == 2
    assert c.auto_scale_lr == dict(enable=True, base_batch_size=2)
    assert c.train_cfg.max_epochs == 20
    assert c.param_scheduler[0] == dict(type='LinearLR', start_factor=0.067, by_epoch=False,
                                        begin=0, end=8000)
    lrs = scheduled_lrs(c, c.param_scheduler[1:], 20)
    expected = ([1e-4] * 6 + [1e-5] * 6 + [1e-6] * 6 + [1e-7] * 2 if frozen
                else [1e-4] * 10 + [1e-5] * 10)
    assert lrs == pytest.approx(expected, rel=1e-9)


def test_vitdet_stages_chain(vitdet_cfgs):
    """Each stage starts a fresh optimizer and schedule from the previous stage's best weights
    on validation, as the peer's jobs did."""
    s1 = vitdet_cfgs['s1-frozen-20e']
    assert s1.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=s1.pretrained,
                                              prefix='backbone.')
    assert s1.get('load_from') is None and not s1.get('resume', False)
    for stage, prev in (('s2-20e', 's1-frozen-20e'), ('s3-20e', 's2-20e'), ('s4-20e', 's3-20e')):
        c = vitdet_cfgs[stage]
        assert c.load_from == VITDET_BEST_OF.format(prev), stage
        assert not c.get('resume', False) and c.model.backbone.init_cfg is None
