"""MAE pretraining and the ViT Faster R-CNN (configs/mae, configs/vitdet): the configs build at
real size, the MAE checkpoint initializes the ViT-B at 512 px (position embeddings interpolated)
and the windowed 1024-px ViT, layer-wise LR decay and the frozen stage do what the peer's recipe
says, a missing checkpoint stops training, an MAE file is refused for evaluation, and the CPU
demo pair trains, resumes and is evaluated through tools/train.py and tools/test.py."""
import glob
import os
import re

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DATASETS, HOOKS, MODELS, DefaultScope, init_default_scope

import custom_modules  # noqa: F401
from custom_modules.engine.hooks import time_limit_hook
from toolkit.checkpoints import (KIND_NAMES, backbone_prefix, check_detector_checkpoint,
                                 checkpoint_kind, load_state_dict_file)
from toolkit.config_edits import set_data_root, set_pretrained
from custom_modules.errors import UserError
from helpers import REPO, SignalBeforeIter


MAE = os.path.join(REPO, 'configs/mae/mae_vit-base-p16_4xb64-amp-coslr-80e_unlabeled224.py')
MAE_DEMO = os.path.join(REPO, 'configs/mae/mae_vit-tiny-p16_1xb16-coslr-8e_synthetic96.py')
VITDET = os.path.join(REPO, 'configs/vitdet/faster-rcnn_vit-b-mae-pre_sfp_1xb2-{}_labeled512.py')
LAYERDECAY, S1, S2 = (VITDET.format(s) for s in ('layerdecay-20e', 's1-frozen-20e', 's2-20e'))
WINDOWED = os.path.join(REPO, 'configs/vitdet/faster-rcnn_vit-b-win-mae-pre_sfp_1xb2-lsj-80e_'
                        'labeled1024.py')
WINDOWED_DEMO = os.path.join(REPO, 'configs/vitdet/faster-rcnn_vit-tiny-win-mae-pre_sfp_1xb4-lsj-'
                             'demo-4e_synthetic.py')
DET_DEMO = os.path.join(REPO, 'configs/vitdet/faster-rcnn_vit-tiny-mae-pre_sfp_1xb4-demo-4e_'
                        'synthetic.py')
CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs/mae/*.py'))
                 + glob.glob(os.path.join(REPO, 'configs/vitdet/*.py')))
LR = 1e-4


def build(cfg, model_cfg=None):
    init_default_scope(cfg.default_scope)
    return MODELS.build(model_cfg if model_cfg is not None else cfg.model)


def det_model(path, pretrained=None):
    """The detector of a config as tools/train.py builds it: with ``pretrained`` set through
    --pretrained's code path and initialized, else with the backbone's init_cfg dropped."""
    cfg = Config.fromfile(path)
    if pretrained:
        set_pretrained(cfg, pretrained)
    else:
        cfg.model.backbone.init_cfg = None
    model = build(cfg)
    if pretrained:
        model.init_weights()
    return cfg, model


@pytest.fixture(scope='module')
def mae_file(module_tmp):
    """An MAE ViT-B/16 checkpoint as the runner writes it (the real pretraining config's model:
    224 px, class token, decoder), every backbone tensor random."""
    torch.manual_seed(0)
    model = build(Config.fromfile(MAE))
    with torch.no_grad():
        for t in model.backbone.state_dict().values():
            t.normal_()
    path = str(module_tmp('mae') / 'keep_epoch_80.pth')
    torch.save(dict(meta=dict(epoch=80), state_dict=model.state_dict()), path)
    return path, {k: v.clone() for k, v in model.backbone.state_dict().items()}


def bicubic_grid(pos_embed, side):
    """The peer's interpolate_pos_embed: the 14x14 patch positions (class token dropped) resized
    bicubically to side x side, as a (1, side, side, C) grid."""
    grid = pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    return F.interpolate(grid, size=(side, side), mode='bicubic',
                         align_corners=False).permute(0, 2, 3, 1)


# ---------------------------------------------------------------- every config builds

@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_builds(path, synthetic_root):
    cfg = Config.fromfile(path)
    is_det = cfg.default_scope == 'mmdet'
    set_data_root(cfg, os.path.join(synthetic_root, 'labeled' if is_det else 'unlabeled'))
    if is_det:
        assert cfg.custom_imports == dict(imports=['custom_modules'], allow_failed_imports=False)
        cfg.model.backbone.init_cfg = None
    model = build(cfg)
    width = 192 if 'tiny' in path else 768
    assert model.backbone.embed_dims == width and len(model.backbone.layers) == 12
    if is_det:
        assert model.roi_head.bbox_head.fc_cls.out_features == 101  # 100 classes + background
        if '-win-' in path:  # ViTDet's pyramid is the whole neck
            assert type(model.neck).__name__ == 'SimpleFeaturePyramid'
            assert model.neck.out_channels == 256
        else:
            pyramid, fpn = model.neck
            assert type(pyramid).__name__ == 'SimpleFeaturePyramid'
            assert pyramid.in_channels == width and pyramid.out_channels is None
            assert fpn.in_channels == [width] * 4 and fpn.out_channels == 256
            assert fpn.num_outs == 5
    else:
        assert model.backbone.mask_ratio == 0.75
    size = int(re.search(r'(\d+)\.py$', path).group(1)) if 'synthetic' not in path else (
        256 if is_det else 96)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            if cfg.get(name):
                ds = DATASETS.build(cfg[name].dataset)
                # the whole pipeline on a generated image: squares of the config's size
                assert tuple(ds[0]['inputs'].shape) == (3, size, size), name


def test_pyramid_strides_4_to_64():
    cfg, model = det_model(S1)
    model.eval()
    with torch.no_grad():
        outs = model.neck(model.backbone(torch.zeros(1, 3, 128, 128)))
    assert [tuple(o.shape) for o in outs] == [(1, 256, 128 // s, 128 // s)
                                              for s in (4, 8, 16, 32, 64)]


# ---------------------------------------------------------------- MAE checkpoint -> ViT

def test_mae_checkpoint_kind(mae_file):
    state = load_state_dict_file(mae_file[0])
    assert checkpoint_kind(state) == 'mmpretrain-mae'
    assert backbone_prefix('mmpretrain-mae', state) == 'backbone.'


def test_mae_initializes_the_512px_vit(mae_file):
    """Every encoder tensor loaded, the 14x14 position embeddings interpolated to 32x32."""
    path, src = mae_file
    cfg = Config.fromfile(S1)
    line = set_pretrained(cfg, path)
    assert line.startswith(f'--pretrained {path}: {KIND_NAMES["mmpretrain-mae"]}, backbone '
                           f'from backbone.* ({len(src)} tensors'), line
    assert 'pos_embed (1, 197, 768) interpolated to (1, 1025, 768)' in line, line
    assert 'neck.*' in line and cfg.model.backbone.init_cfg.prefix == 'backbone.'
    _, model = det_model(S1, path)
    ours = model.backbone.state_dict()
    assert set(ours) == set(src)
    for k, v in src.items():
        if k != 'pos_embed':
            assert torch.equal(ours[k], v), k
    assert torch.equal(ours['pos_embed'][:, :1], src['pos_embed'][:, :1])  # class token's
    torch.testing.assert_close(ours['pos_embed'][:, 1:].reshape(1, 32, 32, 768),
                               bicubic_grid(src['pos_embed'], 32))


def test_mae_initializes_the_windowed_1024px_vit(mae_file):
    path, src = mae_file
    cfg = Config.fromfile(WINDOWED)
    line = set_pretrained(cfg, path)
    assert 'pos_embed (1, 197, 768) interpolated to (1, 64, 64, 768)' in line, line
    assert '24 relative-position tables absent, start at zero' in line, line
    _, model = det_model(WINDOWED, path)
    vit = model.backbone
    assert [layer.window_size for layer in vit.layers] == [14, 14, 0] * 4  # global: 2, 5, 8, 11
    ours = vit.state_dict()
    for k, v in ours.items():
        if 'rel_pos' in k:
            assert not v.any(), k
        elif k != 'pos_embed':
            assert torch.equal(v, src[k]), k
    torch.testing.assert_close(ours['pos_embed'], bicubic_grid(src['pos_embed'], 64))
    vit.eval()
    with torch.no_grad():  # 16x16 tokens: windows padded, positions resized to the input
        assert tuple(vit(torch.zeros(1, 3, 256, 256))[0].shape) == (1, 768, 16, 16)


def test_unset_pretrained_stops_training(synthetic_root, tmp_path):
    from train import build_cfg, parse_args
    for i, path in enumerate((S1, LAYERDECAY, WINDOWED, DET_DEMO)):
        args = parse_args([path, '--work-dir', str(tmp_path / str(i)), '--data-root',
                           os.path.join(synthetic_root, 'labeled')])
        with pytest.raises(UserError, match=r"'MAE-CHECKPOINT-NOT-SET .*--pretrained PATH"):
            build_cfg(args)


def test_mae_checkpoint_refused_for_evaluation(mae_file, synthetic_root, tmp_path):
    import test as test_tool
    with pytest.raises(UserError, match=r'is an MAE pretraining checkpoint \(backbone.\*: a ViT '
                                        r'encoder, neck.\*: its pixel decoder.*Evaluation needs'):
        test_tool.main([S2, mae_file[0], '--data-root', os.path.join(synthetic_root, 'labeled'),
                        '--work-dir', str(tmp_path)])


def test_mae_normalized_pixel_variant():
    """docs/recipes.md's one option for MAE's normalized-pixel loss: the target of every patch
    has mean 0 and variance 1 (the peer's config: raw pixels)."""
    import custom_modules.datasets.unlabeled  # noqa: F401  (the MAE config's custom_imports)
    cfg = Config.fromfile(MAE)
    assert cfg.model.head.norm_pix is False
    cfg.merge_from_dict({'model.head.norm_pix': True})
    head = build(cfg).head
    assert head.norm_pix is True
    target = head.construct_target(torch.rand(2, 3, 32, 32) * 5 + 1)
    torch.testing.assert_close(target.mean(-1), torch.zeros(2, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(target.var(-1), torch.ones(2, 4), atol=1e-3, rtol=0)


# ---------------------------------------------------------------- optimizer and frozen stage

def test_layer_decay_param_groups():
    """The peer's whole-model stages: block i at lr * 0.7 ** (12 - i), patch embedding lowest
    (lr * 0.7 ** 13), neck, heads and the final norm at lr; no weight decay on norms, biases and
    the position embedding, 0.01 on the rest."""
    cfg, model = det_model(S2)
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    by_name = {}
    for g in groups:
        for p in g['params']:
            by_name[g['param_name']] = (g['lr'], g['weight_decay'], p)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(by_name) == names  # every trained tensor, once
    lr = {n: v[0] for n, v in by_name.items()}
    assert lr['backbone.layers.11.attn.qkv.weight'] == pytest.approx(LR * 0.7)
    assert lr['backbone.layers.11.ln2.bias'] == pytest.approx(LR * 0.7)
    assert lr['backbone.layers.0.ffn.layers.1.weight'] == pytest.approx(LR * 0.7**12)
    assert lr['backbone.patch_embed.projection.weight'] == pytest.approx(LR * 0.7**13)
    assert lr['backbone.pos_embed'] == lr['backbone.cls_token'] == min(lr.values())
    for n in ('backbone.ln1.weight', 'neck.0.scales.0.0.weight', 'neck.1.fpn_convs.3.conv.weight',
              'rpn_head.rpn_conv.weight', 'roi_head.bbox_head.fc_cls.weight'):
        assert lr[n] == pytest.approx(LR), n
    for n, (_, wd, p) in by_name.items():
        no_decay = p.ndim == 1 or n.endswith(('pos_embed', 'cls_token'))
        assert wd == (0. if no_decay else 0.01), n


def test_frozen_stage_trains_only_neck_and_heads():
    """Stage 1: a real training step moves the pyramid and heads, not one backbone tensor (the
    optimizer does not even hold them); the backbone still runs in training mode (drop-path)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData
    cfg, model = det_model(S1)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    held = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    assert not held & {id(p) for p in model.backbone.parameters()}
    assert {g['weight_decay'] for g in wrapper.optimizer.param_groups} == {0.01}
    model.train()
    assert all(layer.training for layer in model.backbone.layers)
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    neck = {k: v.clone() for k, v in model.neck.state_dict().items()}
    torch.manual_seed(0)
    sample = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128),
                                         scale_factor=(1., 1.), flip=False))
    sample.gt_instances = InstanceData(bboxes=HorizontalBoxes(torch.tensor([[8., 10., 90., 70.]])),
                                       labels=torch.tensor([7]))
    data = dict(inputs=[torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8)],
                data_samples=[sample])
    model.train_step(data, wrapper)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, backbone[k]), k
    assert all(p.grad is None for p in model.backbone.parameters())
    changed = [k for k, v in model.neck.state_dict().items() if not torch.equal(v, neck[k])]
    assert len(changed) == len(neck)


def test_stage_loads_the_previous_stages_best_checkpoint(tmp_path, capsys):
    """load_from='best-of://DIR' (s2-s4) loads the best_*.pth of DIR with the highest validation
    score its training recorded, not the last epoch; a folder without one is a user error."""
    from mmengine.runner import CheckpointLoader
    cfg = Config.fromfile(S2)
    assert cfg.load_from == ('best-of://work_dirs/faster-rcnn_vit-b-mae-pre_sfp_1xb2-s1-frozen-'
                             '20e_labeled512')
    prev = tmp_path / 's1'
    prev.mkdir()
    for epoch, score in ((4, 0.12), (9, 0.15), (20, None)):
        name = f'best_coco_bbox_mAP_epoch_{epoch}.pth' if score else f'epoch_{epoch}.pth'
        info = dict(best_score=score) if score else {}
        torch.save(dict(meta=dict(epoch=epoch), state_dict=dict(w=torch.tensor([epoch])),
                        message_hub=dict(runtime_info=info)), str(prev / name))
    ckpt = CheckpointLoader.load_checkpoint(f'best-of://{prev}', map_location='cpu')
    assert ckpt['meta']['epoch'] == 9 and ckpt['state_dict']['w'].item() == 9
    with pytest.raises(UserError, match='no best_.*pth checkpoint with a validation score'):
        CheckpointLoader.load_checkpoint(f'best-of://{tmp_path / "none"}', map_location='cpu')


# ---------------------------------------------------------------- the CPU demo pair, end to end

def tool_options(loader, index_cache=None, resize_at=None):
    """--cfg-options for a quick CPU run: no loader workers, and for detection the labeled
    index cached in the test's folder and 128-px images (the Resize at ``resize_at``)."""
    options = [f'{loader}.num_workers=0', f'{loader}.persistent_workers=False',
               'default_hooks.logger.interval=1']
    if index_cache:
        options += [f'{loader}.dataset.index_cache_dir={index_cache}',
                    f'{loader}.dataset.pipeline.{resize_at}.scale=(128,128)']
    return options


@pytest.mark.slow
def test_demo_pair_trains_resumes_and_evaluates(synthetic_root, tmp_path, capfd):
    """MAE demo: 1 epoch, then --resume to 2; detection demo from its checkpoint: 1 epoch, then
    --resume to 2; tools/test.py prints the 12-line summary of the result."""
    import test as test_tool
    import train as train_tool
    mae_dir, det_dir = str(tmp_path / 'mae'), str(tmp_path / 'det')
    unlabeled = os.path.join(synthetic_root, 'unlabeled')
    labeled = os.path.join(synthetic_root, 'labeled')
    index = str(tmp_path / 'index')
    for epochs, resume in ((1, []), (2, ['--resume'])):  # 16 images: 1 batch per epoch
        train_tool.main([MAE_DEMO, '--work-dir', mae_dir, '--data-root', unlabeled, *resume,
                         '--cfg-options', f'train_cfg.max_epochs={epochs}',
                         *tool_options('train_dataloader')])
    mae = os.path.join(mae_dir, 'epoch_2.pth')
    assert checkpoint_kind(load_state_dict_file(mae)) == 'mmpretrain-mae'
    for epochs, resume in ((1, ['--pretrained', mae]), (2, ['--resume'])):
        train_tool.main([DET_DEMO, '--work-dir', det_dir, '--data-root', labeled, *resume,
                         '--cfg-options', f'train_cfg.max_epochs={epochs}',
                         'train_dataloader.dataset.indices=8',
                         *tool_options('train_dataloader', index, resize_at=3)])
    out = capfd.readouterr().out
    assert f'train.py: resuming from {os.path.join(mae_dir, "epoch_1.pth")}' in out, out[-2000:]
    assert f'train.py: resuming from {os.path.join(det_dir, "epoch_1.pth")}' in out, out[-2000:]
    ckpt = torch.load(os.path.join(det_dir, 'epoch_2.pth'), map_location='cpu',
                      weights_only=False)
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 4  # 2 batches of 4 per epoch
    # AdamW continued: 4 steps on every trained tensor, the layer-decayed LRs kept
    assert {int(s['step']) for s in ckpt['optimizer']['state'].values()} == {4}
    lrs = [g['lr'] for g in ckpt['optimizer']['param_groups']]
    assert max(lrs) / min(lrs) == pytest.approx(0.7**-13)
    check_detector_checkpoint(os.path.join(det_dir, 'epoch_2.pth'))  # a ViT detector is one

    test_tool.main([DET_DEMO, os.path.join(det_dir, 'epoch_2.pth'), '--data-root', labeled,
                    '--split', 'validation', '--work-dir', str(tmp_path / 'test'), '--cfg-options',
                    'model.test_cfg.rcnn.score_thr=0.0',
                    *tool_options('test_dataloader', index, resize_at=1)])
    out = capfd.readouterr().out
    lines = re.findall(r'^ Average (?:Precision|Recall) .*$', out, flags=re.M)
    assert len(lines) == 12, out[-3000:]


# ---------------------------------------------------------------- facebookresearch/mae files

def fb_mae_state(width=192, depth=12, dec=128, dec_depth=2, patch=16, side=6):
    """A facebookresearch/mae models_mae.py state_dict (timm Block names), random tensors."""
    def block(prefix, d):
        return {f'{prefix}.norm1.weight': (d,), f'{prefix}.norm1.bias': (d,),
                f'{prefix}.attn.qkv.weight': (3 * d, d), f'{prefix}.attn.qkv.bias': (3 * d,),
                f'{prefix}.attn.proj.weight': (d, d), f'{prefix}.attn.proj.bias': (d,),
                f'{prefix}.norm2.weight': (d,), f'{prefix}.norm2.bias': (d,),
                f'{prefix}.mlp.fc1.weight': (4 * d, d), f'{prefix}.mlp.fc1.bias': (4 * d,),
                f'{prefix}.mlp.fc2.weight': (d, 4 * d), f'{prefix}.mlp.fc2.bias': (d,)}
    shapes = {'cls_token': (1, 1, width), 'pos_embed': (1, 1 + side * side, width),
              'patch_embed.proj.weight': (width, 3, patch, patch),
              'patch_embed.proj.bias': (width,),
              'norm.weight': (width,), 'norm.bias': (width,), 'mask_token': (1, 1, dec),
              'decoder_embed.weight': (dec, width), 'decoder_embed.bias': (dec,),
              'decoder_pos_embed': (1, 1 + side * side, dec), 'decoder_norm.weight': (dec,),
              'decoder_norm.bias': (dec,), 'decoder_pred.weight': (patch * patch * 3, dec),
              'decoder_pred.bias': (patch * patch * 3,)}
    for i in range(depth):
        shapes.update(block(f'blocks.{i}', width))
    for i in range(dec_depth):
        shapes.update(block(f'decoder_blocks.{i}', dec))
    torch.manual_seed(0)
    return {k: torch.randn(s) for k, s in shapes.items()}


def test_fb_mae_checkpoint_converts_for_pretrained(tmp_path):
    """The peer's own MAE file (facebookresearch/mae layout) becomes an mmpretrain MAE
    checkpoint the demo MAE model loads strictly and --pretrained takes."""
    from model_converters import mae_to_mmpretrain
    fb = fb_mae_state()
    src, dst = str(tmp_path / 'checkpoint-80.pth'), str(tmp_path / 'mae.pth')
    torch.save(dict(model=fb, optimizer={}, epoch=80, scaler={}, args=None), src)
    mae_to_mmpretrain.main([src, dst])
    out = load_state_dict_file(dst)
    assert checkpoint_kind(out) == 'mmpretrain-mae' and len(out) == len(fb)
    for a, b in (('blocks.3.mlp.fc1.weight', 'backbone.layers.3.ffn.layers.0.0.weight'),
                 ('blocks.11.norm2.bias', 'backbone.layers.11.ln2.bias'),
                 ('patch_embed.proj.weight', 'backbone.patch_embed.projection.weight'),
                 ('norm.weight', 'backbone.ln1.weight'), ('pos_embed', 'backbone.pos_embed'),
                 ('decoder_blocks.1.attn.qkv.bias', 'neck.decoder_blocks.1.attn.qkv.bias'),
                 ('decoder_norm.bias', 'neck.ln1.bias'), ('mask_token', 'neck.mask_token')):
        assert torch.equal(out[b], fb[a]), (a, b)
    model = build(Config.fromfile(MAE_DEMO))
    model.load_state_dict(out, strict=True)
    set_pretrained(Config.fromfile(DET_DEMO), dst)
    with pytest.raises(SystemExit, match='already an mmpretrain MAE checkpoint'):
        mae_to_mmpretrain.main([dst, str(tmp_path / 'again.pth')])


# ---------------------------------------------------------------- ViTDet's recipe (windowed config)
# pinned to facebookresearch/detectron2 projects/ViTDet: configs/COCO/mask_rcnn_vitdet_b_100ep.py,
# configs/common/models/mask_rcnn_vitdet.py, configs/common/optim.py, modeling/backbone/vit.py

def test_vitdet_recipe_numbers():
    from test_recipe import runner_lr
    from test_ssl_recipe import runner_warmup
    c = Config.fromfile(WINDOWED)
    b = c.model.backbone
    assert (b.type, b.arch, b.img_size, b.window_size, b.use_rel_pos) == (
        'WindowedViT', 'base', 1024, 14, True)
    assert b.drop_path_rate == 0.1
    assert c.model.neck == dict(type='SimpleFeaturePyramid', in_channels=768, out_channels=256,
                                norm_cfg=dict(type='mmpretrain.LN2d', eps=1e-6))
    assert c.model.rpn_head.num_convs == 2
    head = c.model.roi_head.bbox_head
    assert (head.type, head.conv_out_channels, head.fc_out_channels, head.roi_feat_size) == (
        'Shared4Conv1FCBBoxHead', 256, 1024, 7)
    assert head.norm_cfg == dict(type='mmpretrain.LN2d', eps=1e-6)
    roi_layer = c.model.roi_head.bbox_roi_extractor.roi_layer
    assert (roi_layer.output_size, roi_layer.sampling_ratio) == (7, 0)
    assert roi_layer.get('aligned', True)  # mmcv RoIAlign's default: detectron2's ROIAlignV2
    assert c.model.train_cfg.rpn_proposal.max_per_img == 1000
    train = [t.type for t in c.train_dataloader.dataset.pipeline]
    assert 'mmpretrain.ColorJitter' not in train  # ViTDet's LSJ: flip, resize, crop only
    # AdamW 1e-4 at ViTDet's 64 images, scaled by the square root of the total batch
    assert c.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=0.1)
    assert c.auto_scale_lr == dict(enable=True, base_batch_size=64, rule='sqrt')
    plain = c.copy()
    plain.optim_wrapper = dict(type='OptimWrapper', optimizer=c.optim_wrapper.optimizer)
    assert runner_lr(plain, 1, 2) == pytest.approx(3.125e-6, rel=1e-12)
    assert runner_lr(plain, 4, 16) == pytest.approx(1e-4, rel=1e-12)
    assert c.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.7
    # ViTDet's warm-up, 250 iterations of 64 images from factor 0.001, counted in images: 8000
    # iterations at our 1 x 2, 250 at 4 x 16
    assert c.train_dataloader.batch_size == 2
    assert c.param_scheduler[0] == dict(type='LinearLR', start_factor=0.001, by_epoch=False,
                                        begin=0, end_images=16000)
    assert runner_warmup(c, 1, 2)[0] == 8000 and runner_warmup(c, 4, 16)[0] == 250
    steps = c.param_scheduler[1]
    assert (steps.type, steps.milestones, steps.gamma, steps.end) == (
        'MultiStepLR', [71, 77], 0.1, 80)
    assert c.train_cfg.max_epochs == 80


def test_vitdet_param_groups():
    """detectron2's get_default_optimizer_params as ViTDet calls it: weight decay 0.1, none on the
    ViT's LayerNorms and pos_embed; biases, relative positions and the channels-first LayerNorms
    of pyramid and heads keep it; LR by layer as get_vit_lr_decay_rate(0.7, 12 layers)."""
    cfg, model = det_model(WINDOWED)
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    by_name = {g['param_name']: (g['lr'], g['weight_decay']) for g in groups}
    assert set(by_name) == {n for n, p in model.named_parameters() if p.requires_grad}
    for n in ('backbone.layers.0.ln1.weight', 'backbone.layers.7.ln2.bias', 'backbone.pos_embed'):
        assert by_name[n][1] == 0., n
    for n in ('backbone.layers.0.attn.qkv.bias', 'backbone.layers.3.attn.rel_pos_h',
              'backbone.patch_embed.projection.weight', 'neck.scales.0.1.weight',
              'neck.output_convs.0.0.ln.weight', 'roi_head.bbox_head.shared_convs.0.ln.bias',
              'rpn_head.rpn_conv.0.conv.weight', 'roi_head.bbox_head.fc_cls.bias'):
        assert by_name[n][1] == pytest.approx(0.1), n
    lr = {n: v[0] for n, v in by_name.items()}
    assert lr['backbone.layers.11.attn.qkv.weight'] == pytest.approx(LR * 0.7)
    assert lr['backbone.layers.0.ffn.layers.1.weight'] == pytest.approx(LR * 0.7**12)
    assert lr['backbone.patch_embed.projection.weight'] == pytest.approx(LR * 0.7**13)
    assert lr['backbone.pos_embed'] == pytest.approx(LR * 0.7**13)
    for n in ('neck.output_convs.3.1.conv.weight', 'roi_head.bbox_head.fc_reg.weight'):
        assert lr[n] == pytest.approx(LR), n


def test_vitdet_pyramid_halves_channels_without_top_down():
    """ViTDet's pyramid: 192 and 384 channels at strides 4 and 8 from a ViT-B's 768, each level
    only from its own branch (1x1 + 3x3 convs, no sum with coarser levels), stride 64 the
    stride-32 map subsampled; the peer's pyramid keeps 768 everywhere."""
    from custom_modules.models.vitdet import SimpleFeaturePyramid
    vitdet = SimpleFeaturePyramid(768, out_channels=256)
    assert vitdet.level_channels == [192, 384, 768, 768]
    assert (vitdet.scales[0][-1].out_channels, vitdet.scales[1].out_channels) == (192, 384)
    assert SimpleFeaturePyramid(768).level_channels == [768] * 4
    vitdet.eval()
    x = torch.randn(1, 768, 8, 8)
    with torch.no_grad():
        outs = vitdet((x,))
        assert [tuple(o.shape) for o in outs] == [(1, 256, 8 * 16 // s, 8 * 16 // s)
                                                  for s in (4, 8, 16, 32, 64)]
        for i, o in enumerate(outs[:4]):  # no top-down sum: each level is its own branch's
            torch.testing.assert_close(o, vitdet.output_convs[i](vitdet.scales[i](x)))
        assert torch.equal(outs[4], outs[3][:, :, ::2, ::2])


def test_windowed_vit_drops_attention_and_mlp_branches():
    """ViTDet's block: x + drop_path(attn), then + drop_path(mlp). With both branches dropped a
    training-mode block returns its input; mmpretrain's ViTSAM block (MLP branch only) would
    return input + attention."""
    from custom_modules.models.vitdet import WindowedViT
    torch.manual_seed(0)
    vit = WindowedViT(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                feedforward_channels=64, global_attn_indexes=[1]),
                      img_size=64, window_size=2, out_channels=0, drop_path_rate=0.5)
    block = vit.layers[1]  # linspace(0, 0.5, 2): the last block drops with 0.5
    assert block.ffn.dropout_layer.drop_prob == 0.5
    x = torch.randn(64, 4, 4, 32)
    block.train()
    out = block(x)
    unchanged = sum(torch.equal(out[i], x[i]) for i in range(len(x)))
    # both branches dropped for about a quarter of the images (each with probability 0.5)
    assert 0 < unchanged < len(x)
    block.eval()  # no drop in evaluation: both branches, unscaled
    one = x[:1]
    y = one + block.attn(block.ln1(one))
    torch.testing.assert_close(block(one), block.ffn(block.ln2(y), identity=y))


def test_vitdet_demo_is_the_vitdet_recipe_at_demo_scale():
    """make compare's ViTDet-style row: the 1024-px config's model, optimizer and augmentation,
    only the width, the size, the window and the proposal counts of the peer's ViT demo."""
    full = Config.fromfile(WINDOWED)
    demo = Config.fromfile(WINDOWED_DEMO)
    peer_demo = Config.fromfile(DET_DEMO)
    arch = demo.model.backbone.arch
    assert (arch.embed_dims, arch.num_heads, arch.feedforward_channels) == (192, 3, 768)
    assert arch.global_attn_indexes == [2, 5, 8, 11]
    assert (demo.model.backbone.img_size, demo.model.backbone.window_size) == (256, 4)
    for key in ('type', 'drop_path_rate', 'use_rel_pos', 'out_type', 'layer_cfgs', 'init_cfg'):
        assert demo.model.backbone.get(key) == full.model.backbone.get(key), key
    for part in ('rpn_head', 'roi_head'):
        assert demo.model[part] == full.model[part], part
    assert {k: v for k, v in demo.model.neck.items() if k != 'in_channels'} == \
        {k: v for k, v in full.model.neck.items() if k != 'in_channels'}
    assert demo.model.test_cfg == peer_demo.model.test_cfg
    assert demo.optim_wrapper.optimizer.weight_decay == 0.1
    assert demo.optim_wrapper.paramwise_cfg == full.optim_wrapper.paramwise_cfg
    assert demo.param_scheduler[0].start_factor == 0.001
    resize = next(t for t in demo.train_dataloader.dataset.pipeline if t.type == 'RandomResize')
    assert resize.ratio_range == (0.1, 2.0) and resize.scale == (256, 256)
    # the peer demo's budget: batch, LR, epochs, warm-up steps
    assert demo.train_dataloader.batch_size == peer_demo.train_dataloader.batch_size == 4
    assert demo.optim_wrapper.optimizer.lr == peer_demo.optim_wrapper.optimizer.lr == 2e-4
    assert demo.train_cfg.max_epochs == peer_demo.train_cfg.max_epochs == 4
    assert demo.param_scheduler[0].end == peer_demo.param_scheduler[0].end == 50


@pytest.mark.slow
def test_mae_demo_trains_in_bfloat16_on_cpu(synthetic_root, tmp_path):
    """--amp bf16: the MAE demo through tools/train.py in bfloat16 autocast (on CPU, where torch's
    autocast has bf16 only), finite, and numerically not the fp32 run."""
    import train as train_tool
    unlabeled = os.path.join(synthetic_root, 'unlabeled')
    weights = {}
    for amp in ([], ['--amp', 'bf16']):
        work = str(tmp_path / (amp[-1] if amp else 'fp32'))
        train_tool.main([MAE_DEMO, '--work-dir', work, '--data-root', unlabeled, *amp,
                         '--cfg-options', 'train_cfg.max_epochs=1',
                         *tool_options('train_dataloader')])
        ckpt = torch.load(os.path.join(work, 'epoch_1.pth'), map_location='cpu',
                          weights_only=False)
        dumped = Config.fromfile(os.path.join(work, os.path.basename(MAE_DEMO)))  # as it ran
        weights[amp[-1] if amp else 'fp32'] = (ckpt['state_dict'], dumped.optim_wrapper)
    (fp32, plain), (bf16, mixed) = weights['fp32'], weights['bf16']
    assert plain.type == 'OptimWrapper'
    assert (mixed.type, mixed.dtype) == ('MixedPrecisionOptimWrapper', 'bf16')
    assert all(torch.isfinite(v).all() for v in bf16.values() if v.is_floating_point())
    assert any(not torch.equal(fp32[k], bf16[k]) for k in fp32)  # autocast changed the step


ACCUMULATING_DEMO = '''_base_ = {base!r}
# the full recipe's accumulation and guard hooks on the demo's model
optim_wrapper = dict(accumulative_counts={accumulate})
custom_hooks = [*{hooks!r}, dict(type='SignalBeforeIter', at={at})]
'''


@pytest.mark.slow
def test_a_stop_inside_a_gradient_accumulation_waits_for_its_step_and_replays_exactly(
        synthetic_root, tmp_path, signals_restored, monkeypatch):
    """The MAE recipe accumulates the gradients of 2 iterations; a time-limit stop after the
    first of them saved a checkpoint without that half-gradient, so the resumed run was not the
    run it continued. The stop waits for the optimizer step; stopped and resumed, the weights
    equal an uninterrupted run's."""
    import train as train_tool
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    HOOKS.register_module('SignalBeforeIter', module=SignalBeforeIter, force=True)
    recipe = Config.fromfile(MAE)
    assert recipe.optim_wrapper.accumulative_counts == 2
    unlabeled = os.path.join(synthetic_root, 'unlabeled')
    final = {}
    for name, at in (('uninterrupted', -1), ('stopped', 2)):
        config = tmp_path / f'{name}.py'
        config.write_text(ACCUMULATING_DEMO.format(
            base=MAE_DEMO, accumulate=recipe.optim_wrapper.accumulative_counts,
            hooks=recipe.custom_hooks, at=at))
        work = tmp_path / name
        # 16 images in batches of 2: 8 iterations per epoch, 16 in all
        args = [str(config), '--work-dir', str(work), '--data-root', unlabeled, '--cfg-options',
                'train_cfg.max_epochs=2', 'train_dataloader.batch_size=2',
                *tool_options('train_dataloader')]
        if at >= 0:
            with pytest.raises(SystemExit) as e:
                train_tool.main(args)
            assert e.value.code == time_limit_hook.EXIT_TIME_LIMIT
            # the signal came during the 3rd iteration, the first of an accumulation, and the
            # save waited for the 4th
            assert (work / 'last_checkpoint').read_text() == str(work / 'iter_4.pth')
            train_tool.main([*args, '--resume'])
        else:
            train_tool.main(args)
        final[name] = torch.load(work / 'epoch_2.pth', map_location='cpu',
                                 weights_only=False)['state_dict']
    assert final['stopped'].keys() == final['uninterrupted'].keys()
    different = [k for k, v in final['uninterrupted'].items() if not torch.equal(v,
                                                                                 final['stopped'][k])]
    assert not different, f'{len(different)} tensors differ after the resume, e.g. {different[:3]}'
