"""The fine-tuning recipe for self-supervised backbones and DenseCL pretraining: the recipe's
numbers, BatchNorm trained and synchronized on one process and on several CPU processes, the
demo configs training and evaluating through the tools, DenseCL checkpoints taken by both
detection recipes."""
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import write_sample
from mmengine.config import Config
from mmengine.registry import init_default_scope

from custom_modules.checkpoints import checkpoint_kind, load_state_dict_file
from custom_modules.sync_norm import AnyDeviceSyncBN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(REPO, 'configs/faster_rcnn')
SSL = os.path.join(CFG, 'faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_2xb8-ms-36e_labeled.py')
SSL_DEMO = os.path.join(
    CFG, 'faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_1xb8-ms-demo-4e_synthetic.py')
SEED_DEMO = os.path.join(CFG, 'faster-rcnn_r50-mocov2-pre_fpn_1xb4-demo-4e_synthetic.py')
DENSECL = os.path.join(REPO, 'configs/densecl/densecl_resnet50_4xb32-coslr-200e_unlabeled224.py')
DENSECL_DEMO = os.path.join(REPO, 'configs/densecl/densecl_resnet50_1xb16-coslr-8e_synthetic96.py')
MOCO = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py')


def test_ssl_recipe_numbers():
    cfg = Config.fromfile(SSL)
    bb, head = cfg.model.backbone, cfg.model.roi_head.bbox_head
    assert bb.norm_cfg == dict(type='AnyDeviceSyncBN', requires_grad=True)
    assert bb.norm_eval is False and bb.frozen_stages == -1
    assert cfg.model.neck.norm_cfg == bb.norm_cfg and head.norm_cfg == bb.norm_cfg
    assert head.type == 'Shared4Conv1FCBBoxHead' and head.num_classes == 100
    assert bb.init_cfg.prefix == 'backbone.' and 'NOT-SET' in bb.init_cfg.checkpoint
    assert cfg.train_dataloader.batch_size == 8
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if 'Resize' in t['type']]
    assert resize == [dict(type='RandomResize', scale=[(1333, 640), (1333, 800)], keep_ratio=True)]
    assert cfg.optim_wrapper.optimizer.lr == 0.02 and cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.auto_scale_lr.enable is True
    assert cfg.train_cfg.max_epochs == 36
    warmup, steps = cfg.param_scheduler
    # the benchmarks' warm-up: 1000 iterations of 16 images from factor 0.001
    assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', 1e-3, 1000)
    assert steps.milestones == [27, 33] and steps.end == 36
    # the evaluation and the resume/time-limit machinery are the seed recipe's, and precise BN
    # over the benchmarks' 200 batches of 16 before each evaluation
    seed = Config.fromfile(os.path.join(CFG, 'faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py'))
    for key in ('val_evaluator', 'randomness', 'test_dataloader'):
        assert cfg[key] == seed[key], key
    assert cfg.custom_hooks == [*seed.custom_hooks, dict(type='PreciseBNHook', num_iters=200)]
    demo = Config.fromfile(SSL_DEMO)
    assert demo.custom_hooks == [*seed.custom_hooks, dict(type='PreciseBNHook', num_iters=5)]
    assert cfg.train_cfg.type == 'ResumableEpochBasedTrainLoop'
    assert cfg.train_dataloader.batch_sampler.type == 'ResumableBatchSampler'


def test_ssl_model_trains_batchnorm_and_is_plain_bn_on_one_process():
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    cfg = Config.fromfile(SSL)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    syncs = [m for m in model.modules() if isinstance(m, AnyDeviceSyncBN)]
    # every norm layer of the backbone (53), the FPN (8 convs) and the 4conv1fc head (4)
    assert len([m for m in model.backbone.modules() if isinstance(m, AnyDeviceSyncBN)]) == 53
    assert len([m for m in model.neck.modules() if isinstance(m, AnyDeviceSyncBN)]) == 8
    assert len([m for m in model.roi_head.bbox_head.modules()
                if isinstance(m, AnyDeviceSyncBN)]) == 4
    assert len(syncs) == 65
    assert all(p.requires_grad for m in syncs for p in m.parameters())
    model.train()
    assert all(m.training for m in syncs)  # norm_eval=False: batch statistics in training
    # DDP refuses torch's SyncBatchNorm modules on CPU: this one must not be one
    assert not [m for m in model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    # without a process group: BatchNorm, in training and in evaluation
    bn, ref = syncs[0], torch.nn.BatchNorm2d(syncs[0].num_features)
    ref.load_state_dict(bn.state_dict())
    x = torch.randn(2, bn.num_features, 8, 8)
    for mode in (True, False):
        bn.train(mode), ref.train(mode)
        torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)


def _two_process_bn(rank, init_file, x, out_file):
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    torch.manual_seed(0)
    bn = AnyDeviceSyncBN(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    part = x[rank * 3:(rank + 1) * 3].clone().requires_grad_()
    y = bn(part)
    (y * torch.arange(y.numel()).view_as(y).float().sin()).sum().backward()  # a non-trivial loss
    dist.all_reduce(bn.weight.grad)
    torch.save(dict(y=y.detach(), dx=part.grad, dw=bn.weight.grad, mean=bn.running_mean,
                    var=bn.running_var), f'{out_file}.{rank}')
    dist.destroy_process_group()


def test_syncbn_on_two_cpu_processes_equals_bn_on_the_whole_batch(tmp_path):
    """Two gloo processes with 3 images each give the outputs, gradients and running statistics
    of one BatchNorm over all 6 (DDP averages the parameter gradients, which this sums)."""
    torch.manual_seed(1)
    x = torch.randn(6, 3, 5, 4) * 3 + 1
    mp.spawn(_two_process_bn, args=(str(tmp_path / 'init'), x, str(tmp_path / 'out')), nprocs=2)
    got = [torch.load(str(tmp_path / f'out.{r}')) for r in (0, 1)]
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    whole = x.clone().requires_grad_()
    y = bn(whole)
    weights = torch.cat([torch.arange(y[:3].numel()).view_as(y[:3]).float().sin()] * 2)
    (y * weights).sum().backward()
    torch.testing.assert_close(torch.cat([g['y'] for g in got]), y.detach())
    torch.testing.assert_close(torch.cat([g['dx'] for g in got]), whole.grad)
    for g in got:
        torch.testing.assert_close(g['dw'], bn.weight.grad)
        torch.testing.assert_close(g['mean'], bn.running_mean)
        torch.testing.assert_close(g['var'], bn.running_var)


def precise_bn_setup(tiny, tmp_path):
    """The SSL demo's detector (random weights) in training mode and its training loader (our
    batch sampler, mmdet data samples) on the 4 tiny training images, one per batch."""
    from mmdet.registry import MODELS
    from mmengine.runner import Runner
    init_default_scope('mmdet')
    cfg = Config.fromfile(SSL_DEMO)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    loader_cfg = cfg.train_dataloader
    loader_cfg.update(batch_size=1, num_workers=0, persistent_workers=False)
    loader_cfg.dataset.update(data_root=tiny['labeled'], index_cache_dir=str(tmp_path))

    def loader():
        return Runner.build_dataloader(loader_cfg.copy(), seed=0)
    return model, loader


def test_precise_bn_sets_the_mean_of_the_batch_statistics(tiny, tmp_path):
    """After the hook every BatchNorm's running mean and variance are the mean, over the first
    num_iters training batches, of its batch mean and unbiased batch variance: recomputed here
    for the stem's BatchNorm from its convolution's output, batch by batch."""
    import types

    from mmdet.registry import HOOKS

    from custom_modules.precise_bn import PreciseBNHook
    model, loader = precise_bn_setup(tiny, tmp_path)
    head_bn = model.roi_head.bbox_head.shared_convs[0].bn
    means, variances = [], []
    with torch.no_grad():
        for data in list(loader())[:3]:
            x = model.backbone.conv1(model.data_preprocessor(data, True)['inputs'])
            means.append(x.mean((0, 2, 3)))
            variances.append(x.var((0, 2, 3), unbiased=True))
    hook = HOOKS.build(dict(type='PreciseBNHook', num_iters=3))
    assert type(hook) is PreciseBNHook and hook.priority == 'ABOVE_NORMAL'
    runner = types.SimpleNamespace(model=model, train_loop=types.SimpleNamespace(
        dataloader=loader()))
    hook.after_train_epoch(runner)
    bn = model.backbone.bn1
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack(variances).mean(0))
    assert not torch.equal(torch.stack(means[:2]).mean(0), torch.stack(means).mean(0))
    # every BN layer recomputed (the head's from the sampled RoIs), momentum as before
    assert not torch.equal(head_bn.running_mean, torch.zeros_like(head_bn.running_mean))
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, AnyDeviceSyncBN))


@pytest.fixture(scope='module')
def tiny(module_tmp, synthetic_root):
    root = module_tmp('ssl')
    labeled = str(root / 'labeled')
    for split, ids in (('training', (1, 2, 3, 4)), ('validation', (5, 6))):
        for i in ids:
            write_sample(labeled, split, i, size=(96, 64), bboxes=((10, 8, 50, 40), (60, 30, 90, 60)),
                         labels=('dog', 'starfish'))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
    return dict(root=str(root), labeled=labeled, unlabeled=os.path.join(synthetic_root, 'unlabeled'),
                env=env)


def tool(tiny, name, *args):
    r = subprocess.run([sys.executable, os.path.join(REPO, 'tools', name), *args], cwd=tiny['root'],
                       env=tiny['env'], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


@pytest.fixture(scope='module')
def densecl_ckpt(tiny):
    """The DenseCL demo config, one short epoch through tools/train.py."""
    work = os.path.join(tiny['root'], 'densecl')
    tool(tiny, 'train.py', DENSECL_DEMO, '--data-root', tiny['unlabeled'], '--work-dir', work,
         '--cfg-options', 'train_cfg.max_epochs=1', 'train_dataloader.batch_size=4',
         'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
         'model.queue_len=16')
    return open(os.path.join(work, 'last_checkpoint')).read().strip()


def test_densecl_recipe_is_the_moco_recipe_with_a_dense_head(densecl_ckpt):
    cfg, moco = Config.fromfile(DENSECL), Config.fromfile(MOCO)
    assert cfg.model.type == 'DenseCL' and cfg.model.loss_lambda == 0.5
    assert cfg.model.neck.type == 'DenseCLNeck' and cfg.model.neck.num_grid is None
    for key in ('train_dataloader', 'optim_wrapper', 'param_scheduler', 'train_cfg', 'custom_hooks',
                'auto_scale_lr', 'randomness', 'data_preprocessor'):
        assert cfg[key] == moco[key], key
    for key in ('backbone', 'head', 'queue_len', 'feat_dim', 'momentum'):
        assert cfg.model[key] == moco.model[key], key
    state = load_state_dict_file(densecl_ckpt)
    assert checkpoint_kind(state) == 'mmpretrain-densecl'


@pytest.mark.parametrize('config', [SSL_DEMO, SEED_DEMO], ids=['ssl', 'seed'])
def test_demo_recipe_trains_from_densecl_and_evaluates(tiny, densecl_ckpt, config):
    """Both fine-tuning recipes take a DenseCL checkpoint, train and print the 12 lines; the SSL
    recipe's BatchNorm weights and statistics move (the seed recipe's are frozen)."""
    name = os.path.splitext(os.path.basename(config))[0]  # a folder per recipe
    work = os.path.join(tiny['root'], name)
    small = ['train_cfg.max_epochs=1', 'train_dataloader.num_workers=0',
             'train_dataloader.persistent_workers=False', 'train_dataloader.batch_size=2',
             'param_scheduler.0.end=1']
    out = tool(tiny, 'train.py', config, '--data-root', tiny['labeled'], '--work-dir', work,
               '--pretrained', densecl_ckpt, '--cfg-options', *small)
    assert 'DenseCL' in out
    ckpt = open(os.path.join(work, 'last_checkpoint')).read().strip()
    trained = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    start = load_state_dict_file(densecl_ckpt)
    moved = [k for k in ('backbone.bn1.weight', 'backbone.bn1.running_mean',
                         'backbone.layer4.2.bn3.running_var')
             if not torch.equal(trained[k], start[k])]
    assert moved == (['backbone.bn1.weight', 'backbone.bn1.running_mean',
                      'backbone.layer4.2.bn3.running_var'] if config == SSL_DEMO else [])
    out = tool(tiny, 'test.py', config, ckpt, '--data-root', tiny['labeled'], '--split',
               'validation', '--work-dir', os.path.join(work, 'test'), '--cfg-options',
               'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False')
    assert len(re.findall(r'^ Average (?:Precision|Recall) ', out, flags=re.M)) == 12, out[-2000:]


def test_densecl_converts_to_torchvision(tiny, densecl_ckpt):
    dst = os.path.join(tiny['root'], 'densecl_tv.pth')
    out = tool(tiny, 'model_converters/mocov2_to_torchvision.py', densecl_ckpt, dst)
    assert 'missing only fc.weight, fc.bias' in out
    assert checkpoint_kind(torch.load(dst, weights_only=True)) == 'torchvision-resnet'
