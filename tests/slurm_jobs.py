"""What the Slurm test modules share: the wrapper configs that shrink the real ones, the
probes' records, waiting on a run, and the two-node cluster's environment and launcher."""
import json
import os
import time

from helpers import demo_proposals, run_tool

TWO_NODE_DET_EPOCHS = 4  # the two-node detector's schedule: its requeue comes after epoch 2
DET = 'faster-rcnn_r50-mocov2-pre_fpn_2xb2'
DET_DEMO = 'faster-rcnn_r50-scratch_fpn_1xb4-demo-4e_synthetic'
MOCO_DEMO = 'mocov2_resnet50_1xb16-coslr-8e_synthetic96'
SSL_DEMO = 'faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_1xb8-ms-demo-4e_synthetic'


DET_WRAPPER = '''_base_ = {base!r}
custom_imports = dict(imports=['custom_modules', 'rank_probe'], allow_failed_imports=False)
load_image = dict(type='LoadImageNamed', imdecode_backend='pillow',
                  color_type='color_ignore_orientation')
train_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    dataset=dict(data_root={root!r}, index_cache_dir={cache!r}, pipeline=[
        load_image, dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(96, 64), keep_ratio=True), dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')]))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={root!r}, index_cache_dir={cache!r}, pipeline=[
        load_image, dict(type='Resize', scale=(96, 64), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                              'scale_factor', 'instances'))]))
test_dataloader = val_dataloader
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=2),
    dict(type='MultiStepLR', begin=0, end=37, by_epoch=True, milestones=[23, 27], gamma=0.1)]
auto_scale_lr = dict(enable=False)
optim_wrapper = dict(clip_grad=dict(max_norm=5))  # lr 0.03 at batch 1 diverges otherwise
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(save_best=None))
custom_hooks = [dict(type='FiniteLossHook'), dict(type='EpochSeedHook'), dict(type='TimeLimitHook'),
                dict(type='RankProbeHook')]
model = @PROPOSALS@  # 96x64 images with two boxes (tests/helpers.py demo_proposals)
{extra}
'''.replace('@PROPOSALS@', repr(demo_proposals()).replace('{', '{{').replace('}', '}}'))

MOCO_WRAPPER = '''_base_ = {base!r}
custom_imports = dict(imports=['custom_modules', 'custom_modules.datasets.unlabeled', 'rank_probe'],
                      allow_failed_imports=False)
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={root!r}))
model = dict(queue_len=64)
param_scheduler = [dict(type='CosineAnnealingLR', T_max=2, by_epoch=True, begin=0, end=2)]
train_cfg = dict(max_epochs=2)
default_hooks = dict(logger=dict(interval=1))
custom_hooks = [dict(type='FiniteLossHook'), dict(type='EpochSeedHook'), dict(type='RankProbeHook')]
'''


def probes(work_dir):
    out = {}
    for name in sorted(os.listdir(work_dir)):
        if name.startswith('rank') and name.endswith('.json'):
            p = json.load(open(os.path.join(work_dir, name)))
            out[p['rank']] = p
    return out


def assert_two_ranks_in_step(work_dir):
    p = probes(work_dir)
    assert sorted(p) == [0, 1] and p[0]['world_size'] == 2
    assert p[1]['samples'], 'rank 1 saw no data'
    # every iteration, the two ranks trained on different images
    assert len(p[0]['samples']) == len(p[1]['samples']) and p[0]['iter'] == p[1]['iter']
    per_iter = len(p[0]['samples']) // p[0]['iter']
    for i in range(p[0]['iter']):
        batch = slice(i * per_iter, (i + 1) * per_iter)
        assert not set(p[0]['samples'][batch]) & set(p[1]['samples'][batch]), i
    assert p[0]['weights'] == p[1]['weights'], 'ranks ended with different weights'
    ckpts = [f for f in os.listdir(work_dir) if f.endswith('.pth')]
    assert ckpts, 'rank 0 wrote no checkpoint'
    return p


def reached_epoch(work_dir, epoch):
    """True once the run has saved epoch_N.pth for some N >= epoch. Reads last_checkpoint, which
    stays, rather than waiting for epoch_N.pth itself, which max_keep_ckpts deletes three epochs
    later: a poll that misses that window would wait for a file that no longer comes."""
    def reached():
        try:
            name = os.path.basename(open(os.path.join(work_dir, 'last_checkpoint')).read().strip())
        except FileNotFoundError:
            return False
        return name.startswith('epoch_') and int(name[len('epoch_'):-len('.pth')]) >= epoch
    reached.__name__ = f'epoch {epoch} checkpoint in {work_dir}'
    return reached


def wait_for(done, proc_alive, timeout=300, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if done():
            return
        tail = open(log).read()[-3000:] if log and os.path.exists(log) else ''
        assert proc_alive(), f'training ended before the {done.__name__}\n{tail}'
        time.sleep(0.1)
    raise TimeoutError(done.__name__)


# Loaded by every Python process started with the run's environment (PYTHONPATH); acts only
# when MN_AUDIT names a folder: one file per process with its Slurm rank and node, the files it
# opened for writing (or renamed, removed) under MN_AUDIT_ROOT, and MASTER_ADDR/PORT at exit.
SITECUSTOMIZE = r'''
import atexit, json, os, sys
_dir = os.environ.get('MN_AUDIT')
if _dir and 'SLURM_PROCID' in os.environ:
    _root = os.environ['MN_AUDIT_ROOT']
    _f = open(os.path.join(_dir, 'rank%s-%d.jsonl' % (os.environ['SLURM_PROCID'], os.getpid())),
              'a')

    def _put(**kw):
        _f.write(json.dumps(kw) + '\n')
        _f.flush()

    _put(rank=int(os.environ['SLURM_PROCID']), node=os.environ.get('SLURMD_NODENAME'),
         node_id=os.environ.get('SLURM_NODEID'), job=os.environ.get('SLURM_JOB_ID'))
    _W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _hook(event, args):  # loader workers (forked) keep it: their writes count too
        if event == 'open':
            path, mode, flags = args
            if not (mode and set(mode) & set('wax+') or mode is None and flags & _W):
                return
            paths = [path]
        elif event in ('os.rename', 'os.replace', 'shutil.copyfile', 'shutil.move'):
            paths = [args[1]]
        elif event == 'os.remove':
            paths = [args[0]]
        else:
            return
        for p in paths:
            if isinstance(p, (str, bytes)) or hasattr(p, '__fspath__'):
                p = os.path.abspath(os.fsdecode(p))
                if p.startswith(_root + os.sep):
                    _put(write=p)

    sys.addaudithook(_hook)
    atexit.register(lambda: _put(master=[os.environ.get('MASTER_ADDR'),
                                         os.environ.get('MASTER_PORT')]))
'''

MOCO_MULTINODE = '''
# the real config's scaling: its lr is for a total batch of 4 here; 2 ranks x 4 -> lr x 2
auto_scale_lr = dict(enable=True, base_batch_size=4)
'''


def cluster_env(env, slurm2, audit=None, **extra):
    e = dict(slurm2.env, **{k: v for k, v in env['env'].items()
                            if k in ('PYTHON', 'PYTHONPATH', 'MN_AUDIT_ROOT')}, **extra)
    if audit:
        os.makedirs(audit, exist_ok=True)
        e['MN_AUDIT'] = audit
    return e


def audit_records(audit):
    """rank -> dict(node, node_id, writes, master) over its processes (loader workers too)."""
    out = {}
    for name in sorted(os.listdir(audit)):
        recs = [json.loads(line) for line in open(os.path.join(audit, name))]
        head = recs[0]
        r = out.setdefault(head['rank'], dict(node=head['node'], node_id=head['node_id'],
                                              writes=set(), master=None))
        r['writes'] |= {x['write'] for x in recs if 'write' in x}
        r['master'] = next((x['master'] for x in recs if 'master' in x), r['master'])
    return out


def slurm_train(env, slurm2, config, work, *args, audit=None, timeout=600, **extra):
    e = cluster_env(env, slurm2, audit, GPUS='2', GPUS_PER_NODE='1', CPUS_PER_TASK='1', GRES='',
                    **extra)
    t = time.time()
    r = run_tool('slurm_train.sh', 'debug', os.path.basename(work), config, work, *args, env=e,
                 cwd=env['root'], timeout=timeout, check=True)
    print(f'{os.path.basename(work)}: {time.time() - t:.0f} s')
    return r
