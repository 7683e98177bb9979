"""The fine-tuning recipe for self-supervised backbones and DenseCL pretraining: the recipe's
numbers, BatchNorm trained and synchronized on one process and on several CPU processes, the
demo configs training and evaluating through the tools, DenseCL checkpoints taken by both
detection recipes."""
import os
import re
import types
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.registry import init_default_scope

from toolkit.checkpoints import checkpoint_kind, load_state_dict_file
from custom_modules.models.sync_norm import AnyDeviceSyncBN
from helpers import REPO, run_tool, write_sample

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
    # weight decay 1e-4 on every parameter, norms included, as mmselfsup's mmdet benchmark
    assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4
    assert 'paramwise_cfg' not in cfg.optim_wrapper
    assert cfg.train_cfg.max_epochs == 36
    warmup, steps = cfg.param_scheduler
    # the benchmarks' warm-up: 1000 iterations of 16 images from factor 0.001, counted in images
    assert warmup == dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
                          end_images=16000)
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


def runner_warmup(cfg, gpus, per_gpu):
    """The warm-up's end in iterations as tools/train.py sets it on the runner of a run on
    ``gpus`` processes of ``per_gpu`` images, and what it logged."""
    from toolkit.batch_scaling import set_ends_from_images
    logged = []
    runner = types.SimpleNamespace(
        world_size=gpus, param_schedulers=cfg.param_scheduler,
        cfg=Config(dict(train_dataloader=dict(cfg.train_dataloader, batch_size=per_gpu))),
        logger=types.SimpleNamespace(info=logged.append))
    set_ends_from_images(runner)
    return runner.param_schedulers[0]['end'], logged


@pytest.mark.parametrize('gpus,per_gpu,iters', [(2, 8, 1000), (1, 8, 2000), (4, 16, 250),
                                                (3, 8, 667)])
def test_ssl_warmup_covers_16000_images_at_any_total_batch(gpus, per_gpu, iters):
    cfg = Config.fromfile(SSL)
    end, logged = runner_warmup(cfg, gpus, per_gpu)
    assert end == iters  # rounded up: 16000 / 24 = 666.7 -> 667
    rounded = '' if iters * gpus * per_gpu == 16000 else ': end_images=16000 rounded up'
    assert logged == [f'LinearLR: {iters} iterations = {iters * gpus * per_gpu} images at total '
                      f'batch {gpus * per_gpu} ({gpus} x {per_gpu}){rounded}']
    assert cfg.param_scheduler[0].end_images == 16000  # the config itself is left as written


def test_train_sets_the_warmup_in_iterations_before_training(tiny, tmp_path, monkeypatch):
    """tools/train.py hands the runner its warm-up in iterations of the run's total batch (here
    1 x 4 images) before it trains; ``end`` beside ``end_images`` is a user error."""
    import train

    from toolkit.console import QuietRunner
    from custom_modules.errors import UserError

    class Runner(types.SimpleNamespace):
        def train(self):
            self.trained_with = self.param_schedulers
    runners = []

    def from_cfg(cfg):
        runners.append(Runner(world_size=1, cfg=cfg, param_schedulers=cfg.param_scheduler,
                              auto_scale_lr=cfg.auto_scale_lr,
                              logger=types.SimpleNamespace(info=print, warning=print)))
        return runners[-1]
    monkeypatch.setattr(QuietRunner, 'from_cfg', from_cfg)
    args = [SSL, '--data-root', tiny['labeled'], '--cfg-options', 'model.backbone.init_cfg=None',
            'train_dataloader.batch_size=4']
    with warnings.catch_warnings():  # main's filters stay in main
        train.main([*args, '--work-dir', str(tmp_path / 'a')])
        assert runners[0].trained_with[0]['end'] == 4000
        with pytest.raises(UserError, match='end_images is for an iteration-based scheduler'):
            train.main([*args, 'param_scheduler.0.end=2', '--work-dir', str(tmp_path / 'b')])
    assert not hasattr(runners[1], 'trained_with')


def _two_process_bn(rank, x):
    torch.manual_seed(0)
    bn = AnyDeviceSyncBN(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    part = x[rank * 3:(rank + 1) * 3].clone().requires_grad_()
    y = bn(part)
    (y * torch.arange(y.numel()).view_as(y).float().sin()).sum().backward()  # a non-trivial loss
    dist.all_reduce(bn.weight.grad)
    return dict(y=y.detach(), dx=part.grad, dw=bn.weight.grad, mean=bn.running_mean,
                var=bn.running_var)


def _two_processes(rank, init_file, x, labeled, tmp, out_file):
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    torch.save(dict(bn=_two_process_bn(rank, x),
                    precise=_two_process_precise_bn(rank, labeled, tmp)), f'{out_file}.{rank}')
    dist.destroy_process_group()


@pytest.fixture(scope='module')
def two_processes(tiny, module_tmp):
    """What each of two gloo processes got: ``bn``, AnyDeviceSyncBN on 3 of the 6 images ``x``;
    ``precise``, the precise-BN update on the SSL demo's detector. One start for both tests."""
    tmp = module_tmp('two')
    torch.manual_seed(1)
    x = torch.randn(6, 3, 5, 4) * 3 + 1
    mp.spawn(_two_processes, nprocs=2, args=(str(tmp / 'init'), x, tiny['labeled'], str(tmp),
                                             str(tmp / 'out')))
    return dict(x=x, got=[torch.load(str(tmp / f'out.{r}')) for r in (0, 1)])


@pytest.mark.slow
def test_syncbn_on_two_cpu_processes_equals_bn_on_the_whole_batch(two_processes):
    """Two gloo processes with 3 images each give the outputs, gradients and running statistics
    of one BatchNorm over all 6 (DDP averages the parameter gradients, which this sums)."""
    x = two_processes['x']
    got = [g['bn'] for g in two_processes['got']]
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


def precise_bn_setup(labeled, index_dir):
    """The SSL demo's detector (random weights, the same on every process) in training mode and
    its training loader (our batch sampler, mmdet data samples; each process its share of the
    images) on the tiny training images, one per batch."""
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
    loader_cfg.dataset.update(data_root=labeled, index_cache_dir=str(index_dir))

    def loader():
        return Runner.build_dataloader(loader_cfg.copy(), seed=0)
    return model, loader


def record_bn_batches(model):
    """Per BatchNorm layer, per forward: the per-channel sum, sum of squares and count of the
    layer's input (float64), recorded from now on."""
    from torch.nn.modules.batchnorm import _BatchNorm
    records = {}
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            def hook(module, args, calls=records.setdefault(name, [])):
                x = args[0].detach().double().transpose(0, 1).flatten(1)
                calls.append(torch.stack([x.sum(1), (x * x).sum(1),
                                          torch.full_like(x[:, 0], x.shape[1])]))
            m.register_forward_pre_hook(hook)
    return records


def precise_stats(*processes):
    """Per layer, from the records of every process: the mean over the batches of the batch
    mean and unbiased batch variance, a batch being what all processes forwarded together."""
    out = {}
    for name in processes[0]:
        total, squares, count = sum(torch.stack(p[name]) for p in processes).unbind(1)
        mean = total / count
        var = (squares - count * mean * mean) / (count - 1)
        out[name] = (mean.mean(0).float(), var.mean(0).float())
    return out


def assert_bn_stats(state, expected):
    """The running statistics in ``state`` (a state dict) are ``expected``, for all 65 layers.
    Within 1e-5 relative: the model sums in float32 (SyncBN's all-reduce, another order), which
    is 2e-6 off the float64 sums here for a variance of 26; a biased variance is off by
    1/(n-1), 4e-5 or more for the at most 24,576 values per channel here."""
    assert len(expected) == 65
    for name, (mean, var) in expected.items():
        for key, value in (('running_mean', mean), ('running_var', var)):
            torch.testing.assert_close(state[f'{name}.{key}'], value, rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f'{name}.{key}: {m}')


@pytest.mark.slow
def test_precise_bn_sets_the_mean_of_the_batch_statistics(tiny, tmp_path):
    """After the hook every BatchNorm's running mean and variance are the mean, over the first
    num_iters training batches, of its batch mean and unbiased batch variance: for every layer
    (the head's from the sampled RoIs), from the inputs it got, and for the stem's recomputed
    from its convolution's output, batch by batch. The forwards run in the optimizer wrapper's
    context (autocast under --amp)."""
    import contextlib

    from mmdet.registry import HOOKS

    from custom_modules.engine.hooks.precise_bn_hook import PreciseBNHook
    model, loader = precise_bn_setup(tiny['labeled'], tmp_path)
    means, variances = [], []
    with torch.no_grad():
        for data in list(loader())[:3]:
            x = model.backbone.conv1(model.data_preprocessor(data, True)['inputs'])
            means.append(x.mean((0, 2, 3)))
            variances.append(x.var((0, 2, 3), unbiased=True))
    hook = HOOKS.build(dict(type='PreciseBNHook', num_iters=3))
    assert type(hook) is PreciseBNHook and hook.priority == 'ABOVE_NORMAL'
    inside, seen = [], []

    @contextlib.contextmanager
    def optim_context(m):
        assert m is model
        inside.append(True)
        yield
        inside.pop()
    model.backbone.bn1.register_forward_pre_hook(lambda *_: seen.append(bool(inside)))
    records = record_bn_batches(model)
    runner = types.SimpleNamespace(
        model=model, train_loop=types.SimpleNamespace(dataloader=loader()),
        optim_wrapper=types.SimpleNamespace(optim_context=optim_context))
    hook.after_train_epoch(runner)
    assert seen == [True] * 3
    bn = model.backbone.bn1
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack(variances).mean(0))
    assert not torch.equal(torch.stack(means[:2]).mean(0), torch.stack(means).mean(0))
    assert all(len(calls) == 3 for calls in records.values())
    assert_bn_stats(model.state_dict(), precise_stats(records))
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, AnyDeviceSyncBN))


def _two_process_precise_bn(rank, labeled, tmp):
    from custom_modules.engine.hooks.precise_bn_hook import update_bn_stats
    model, loader = precise_bn_setup(labeled, os.path.join(tmp, f'index{rank}'))
    records = record_bn_batches(model)
    used = update_bn_stats(model, loader(), 2)
    state = {k: v for k, v in model.state_dict().items() if k.endswith(('running_mean',
                                                                         'running_var'))}
    return dict(used=used, records=records, state=state)


@pytest.mark.slow
def test_precise_bn_on_two_processes_is_the_statistics_of_both(two_processes):
    """Two gloo processes, each with its own 2 of the 4 training images, one per batch, run the
    precise-BN update over 2 batches with the SSL recipe's synchronized BN: both end with the
    same statistics, those of the batches the two formed together (the mean over the 2 steps of
    the batch mean and unbiased variance over both processes' inputs), for every layer."""
    got = [g['precise'] for g in two_processes['got']]
    assert [g['used'] for g in got] == [2, 2]
    stem = [g['records']['backbone.bn1'] for g in got]
    assert not torch.equal(stem[0][0], stem[1][0])  # other images on each process
    assert got[0]['state'].keys() == got[1]['state'].keys()
    for k in got[0]['state']:
        assert torch.equal(got[0]['state'][k], got[1]['state'][k]), k
    assert_bn_stats(got[0]['state'], precise_stats(got[0]['records'], got[1]['records']))


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
    r = run_tool(name, *args, cwd=tiny['root'], env=tiny['env'], timeout=900, check=True)
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_densecl_converts_to_torchvision(tiny, densecl_ckpt):
    dst = os.path.join(tiny['root'], 'densecl_tv.pth')
    out = tool(tiny, 'model_converters/mocov2_to_torchvision.py', densecl_ckpt, dst)
    assert 'missing only fc.weight, fc.bias' in out
    assert checkpoint_kind(torch.load(dst, weights_only=True)) == 'torchvision-resnet'
