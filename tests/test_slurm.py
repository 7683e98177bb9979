"""Launchers, requeue, kill and SIGUSR1 recovery on a real (one-node, CPU) Slurm cluster and
with torchrun. Training runs are the real configs shrunk by small wrapper configs (tiny images,
few iterations, two persistent loader workers) that also load tests/rank_probe.py. The real
configs at real sizes go through the Slurm chain in tests/test_rehearsal.py."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_labeled

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, 'tests')
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
{extra}
'''

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


@pytest.fixture(scope='module')
def env(module_tmp, synthetic_root):
    """Working folder with tiny labeled data, wrapper configs and a MoCo checkpoint."""
    root = module_tmp('slurm_work')
    labeled = str(root / 'labeled')
    write_tiny_labeled(labeled)
    cfg_dir = root / 'configs'
    (cfg_dir / 'faster_rcnn').mkdir(parents=True)
    (cfg_dir / 'mocov2').mkdir()
    cache = str(root / 'index-cache')

    def det(name, extra='', base=None):
        path = cfg_dir / 'faster_rcnn' / f'{name}.py'
        path.write_text(DET_WRAPPER.format(
            base=os.path.join(REPO, 'configs', 'faster_rcnn', f'{base or name}.py'), root=labeled,
            cache=cache, extra=extra))
        return str(path)

    for stage in ('s1-23e', 's2-27e', 's3-37e'):
        det(f'{DET}-{stage}_labeled')
    short = det('short', 'train_cfg = dict(max_epochs=14)', base=f'{DET}-s1-23e_labeled')
    ddp = det(DET_DEMO, 'train_cfg = dict(max_epochs=2)\nval_dataloader = None  # as in the demo')
    # the SSL recipe's BatchNorm, synchronized over gloo (custom_modules/sync_norm.py)
    ssl = det(SSL_DEMO, 'train_cfg = dict(max_epochs=2)\nval_dataloader = None\n'
              'model = dict(backbone=dict(init_cfg=None))')
    moco = cfg_dir / 'mocov2' / f'{MOCO_DEMO}.py'
    moco.write_text(MOCO_WRAPPER.format(
        base=os.path.join(REPO, 'configs', 'mocov2', f'{MOCO_DEMO}.py'),
        root=os.path.join(synthetic_root, 'unlabeled')))
    sys.path.insert(0, REPO)
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    moco_model = MODELS.build(Config.fromfile(str(moco)).model)
    moco_ckpt = str(root / 'moco.pth')
    torch.save(dict(state_dict=moco_model.state_dict()), moco_ckpt)
    proc_env = dict(os.environ, PYTHON=sys.executable,
                    PYTHONPATH=os.pathsep.join([REPO, TESTS, os.environ.get('PYTHONPATH', '')]))
    return dict(root=str(root), labeled=labeled, cfg_dir=str(cfg_dir), short=short, ddp=ddp, ssl=ssl,
                moco=str(moco), moco_ckpt=moco_ckpt, env=proc_env)


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


def train_local(env, config, work_dir, *args, timeout=600):
    return subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'train.py'), config,
                           '--work-dir', work_dir, *args], env=env['env'], cwd=env['root'],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def reference_run(env):
    """The uninterrupted run the requeue and kill tests must reproduce."""
    work = os.path.join(env['root'], 'work_dirs', 'reference')
    r = train_local(env, env['short'], work, '--pretrained', env['moco_ckpt'])
    assert r.returncode == 0, r.stderr[-3000:]
    return probes(work)[0]


@pytest.mark.parametrize('recipe', ['ddp', 'ssl'])
def test_dist_train_sh_two_cpu_processes(env, recipe):
    work = os.path.join(env['root'], 'work_dirs', f'dist_{recipe}')
    r = subprocess.run([os.path.join(REPO, 'tools', 'dist_train.sh'), env[recipe], '2',
                        '--work-dir', work], env=env['env'], cwd=env['root'],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert_two_ranks_in_step(work)


@pytest.fixture(scope='module')
def unlabeled_image(env, synthetic_root):
    """(the MoCo runs' unlabeled images packed as the course ships them, unlabeled.sqsh, or
    None; why not)."""
    from make_synthetic_data import pack_unlabeled
    from squashfs_tools import mksquashfs_unavailable
    why = mksquashfs_unavailable()
    if why:
        return None, why
    data = Path(env['root']) / 'packed'
    shutil.copytree(os.path.join(synthetic_root, 'unlabeled'), data / 'unlabeled')
    return str(pack_unlabeled(data)), None


@pytest.mark.slurm
@pytest.mark.parametrize('which', ['det', 'moco'])
def test_slurm_train_sh_two_ranks(env, slurm, which, request):
    work = os.path.join(env['root'], 'work_dirs', f'srun_{which}')
    config = env['ddp'] if which == 'det' else env['moco']
    e = dict(slurm.env, **{k: v for k, v in env['env'].items() if k in ('PYTHON', 'PYTHONPATH')},
             GPUS='2', CPUS_PER_TASK='1', GRES='')
    args, image, no_image = [], None, None
    if which == 'moco':  # both ranks read the unlabeled set out of the image, as shipped
        image, no_image = request.getfixturevalue('unlabeled_image')
        cache = os.path.join(env['root'], 'xdg-cache')
        e['XDG_CACHE_HOME'] = cache
        args = ['--data-root', image] if image else []
    r = subprocess.run([os.path.join(REPO, 'tools', 'slurm_train.sh'), 'debug', f'srun-{which}',
                        config, work, *args], env=e, cwd=env['root'], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    p = assert_two_ranks_in_step(work)
    assert p[0]['master_port'] == p[1]['master_port'] != '29500'  # per-job port
    if which == 'moco' and not image:
        pytest.skip(f'two ranks trained from the folder; reading the .sqsh skipped: {no_image}')
    if image:
        assert all(s.startswith('sqsh://') for q in p.values() for s in q['samples'])
        # one index built on the node, the other rank mapped the cached file
        assert p[0]['index_builds'] + p[1]['index_builds'] == 1, p
        index = os.listdir(os.path.join(cache, 'sqsh-index'))
        assert len(index) == 1 and index[0].endswith('.npy'), index


def _reached_epoch(work_dir, epoch):
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


def _wait_for(done, proc_alive, timeout=300, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if done():
            return
        tail = open(log).read()[-3000:] if log and os.path.exists(log) else ''
        assert proc_alive(), f'training ended before the {done.__name__}\n{tail}'
        time.sleep(0.1)
    raise TimeoutError(done.__name__)


@pytest.mark.slurm
def test_requeue_resumes_and_matches_uninterrupted_run(env, slurm, reference_run):
    work = os.path.join(env['root'], 'work_dirs', 'requeue')
    e = dict(slurm.env, **{k: v for k, v in env['env'].items() if k in ('PYTHON', 'PYTHONPATH')},
             REPO=REPO)
    r = subprocess.run(['sbatch', '--parsable', '-p', 'debug', '--gres=none', '--ntasks-per-node=1',
                        '--cpus-per-task=1', '--job-name=requeue',
                        os.path.join(REPO, 'tools', 'slurm', 'train.sbatch'), env['short'],
                        '--work-dir', work, '--pretrained', env['moco_ckpt']],
                       env=e, cwd=env['root'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    _wait_for(_reached_epoch(work, 4), lambda: slurm.job_state(job) in ('PENDING', 'RUNNING'))
    slurm.requeue(job)
    assert slurm.wait(job, timeout=600) == 'COMPLETED'
    # a standalone sbatch logs to the submit folder (work_dirs/slurm/ may not exist yet)
    log = open(os.path.join(env['root'], f'slurm-requeue-{job}.out')).read()
    assert 'restart 1' in log and 'resumed epoch' in log
    # scontrol requeue sends SIGTERM (as preemption and scancel do): the run, two persistent
    # loader workers included, saved the iteration it was at and the restart continued it
    stop = re.search(r'stop requested \(SIGTERM[^)]*\): saved (\S+/iter_(\d+)\.pth)', log)
    assert stop and int(stop[2]) >= 8, log[-3000:]  # past epoch 4: 2 iterations an epoch
    assert f'resuming from {stop[1]} ' in log, log[-3000:]
    p = probes(work)[0]
    assert p['iter'] == reference_run['iter'] == 28  # 14 epochs x 2 images, batch 1
    assert p['weights'] == reference_run['weights']


def test_kill_9_then_resume_matches_uninterrupted_run(env, reference_run):
    work = os.path.join(env['root'], 'work_dirs', 'kill9')
    cmd = [sys.executable, os.path.join(REPO, 'tools', 'train.py'), env['short'], '--work-dir',
           work, '--pretrained', env['moco_ckpt']]
    proc = subprocess.Popen(cmd, env=env['env'], cwd=env['root'], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_for(_reached_epoch(work, 5), lambda: proc.poll() is None)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(work, 'epoch_14.pth'))
    r = train_local(env, env['short'], work, '--pretrained', env['moco_ckpt'], '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'resumed epoch' in r.stdout + r.stderr
    p = probes(work)[0]
    assert p['iter'] == reference_run['iter'] and p['weights'] == reference_run['weights']
    # resubmitting a finished job says so and trains nothing more
    r = train_local(env, env['short'], work, '--pretrained', env['moco_ckpt'], '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'already finished its 14 epochs' in r.stdout
    assert probes(work)[0] == p


def test_sigusr1_stops_inside_an_epoch_and_resume_matches_uninterrupted_run(env, reference_run):
    """The time-limit path without Slurm: SIGUSR1 -> iter_N.pth after the current iteration,
    exit status 75; --resume continues inside that epoch (skipping the batches trained, RNG
    restored) and ends with the reference's weights."""
    work = os.path.join(env['root'], 'work_dirs', 'sigusr1')
    cmd = [sys.executable, os.path.join(REPO, 'tools', 'train.py'), env['short'], '--work-dir',
           work, '--pretrained', env['moco_ckpt']]
    log = os.path.join(env['root'], 'sigusr1.log')  # a file, not a pipe nobody reads while waiting
    with open(log, 'w') as f:
        proc = subprocess.Popen(cmd, env=env['env'], cwd=env['root'], stdout=f,
                                stderr=subprocess.STDOUT)
    _wait_for(_reached_epoch(work, 3), lambda: proc.poll() is None, log=log)
    os.kill(proc.pid, signal.SIGUSR1)
    proc.wait(timeout=300)
    out = open(log).read()
    assert proc.returncode == 75, out[-3000:]
    saved = [f for f in os.listdir(work) if f.startswith('iter_')]
    assert len(saved) == 1 and 'not a Slurm job' in out, out[-3000:]
    r = train_local(env, env['short'], work, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    p = probes(work)[0]
    assert p['iter'] == reference_run['iter'] and p['weights'] == reference_run['weights']
    assert not [f for f in os.listdir(work) if f.startswith('iter_')]
