"""The real job, rehearsed on the one-node test cluster: the REAL configs through
tools/slurm/submit_pipeline.sh and tools/slurm/train.sbatch, with the configs' own loader
workers, shrunk only through documented overrides: a few generated images at real sizes,
MOCO_EPOCHS / DET_EPOCHS, a one-iteration warm-up (param_scheduler.0.end=2). `pytest -m rehearsal`
runs them alone."""
import glob
import json
import os
import re
import shutil
import sys
import time

import pytest
import torch
from helpers import REPO, run_tool

pytestmark = [pytest.mark.slurm, pytest.mark.rehearsal, pytest.mark.slow]


MOCO = 'mocov2_resnet50_4xb32-coslr-200e_unlabeled224'
MOCO_CFG = os.path.join(REPO, 'configs', 'mocov2', f'{MOCO}.py')
DET = 'faster-rcnn_r50-mocov2-pre_fpn_2xb2'
TRAIN_SBATCH = os.path.join(REPO, 'tools', 'slurm', 'train.sbatch')
# MoCo: stop at 2 of a 10-epoch cosine (the seed: 100 of 200); fine-tuning: s1/s2/s3 end at
# epochs 2/3/4 (the seed: 23/27/37)
MOCO_EPOCHS, DET_EPOCHS = (2, 10), (2, 3, 4)
# 32 PNGs in batches of 4: 8 iterations per epoch, so a stop can fall inside an epoch
MOCO_BATCH = 4
LR_MOCO = 0.015 * MOCO_BATCH / 128  # auto_scale_lr: one process
LR_DET = 0.03 * 2 / 4  # one process of 2 images


def moco_opts(stop, total=MOCO_EPOCHS[1]):
    return ['--cfg-options', f'train_cfg.max_epochs={stop}', f'param_scheduler.0.T_max={total}',
            f'param_scheduler.0.end={total}', f'train_dataloader.batch_size={MOCO_BATCH}']


@pytest.fixture(scope='module')
def rig(module_tmp, slurm):
    """Generated data as the course ships it (unlabeled 224 px PNGs in a squashfs image, read as
    it is; labeled 375-500 px JPEGs), the submit folder, and the environment the jobs see."""
    from make_synthetic_data import make_dataset, pack_unlabeled
    from squashfs_tools import mksquashfs_unavailable
    why = mksquashfs_unavailable()
    if why:
        pytest.skip(f'rehearsal skipped: {why}')
    root = module_tmp('rehearsal')
    make_dataset(str(root / 'data'), seed=0, num_unlabeled=32, num_train=2, num_val=2,
                 min_size=375, max_size=500)
    unlabeled = str(pack_unlabeled(root / 'data'))
    env = dict(slurm.env, PYTHON=sys.executable, XDG_CACHE_HOME=str(root / 'cache'))
    env.pop('PYTHONPATH', None)  # the tools find the repository themselves
    return dict(root=str(root), slurm=slurm, env=env, unlabeled=unlabeled,
                labeled=str(root / 'data' / 'labeled'))


def log_of(rig, name, job):
    path = os.path.join(rig['root'], 'work_dirs', 'slurm', f'{name}-{job}.out')
    return open(path).read() if os.path.exists(path) else ''


def wait_done(rig, job, name, timeout=900):
    try:
        return rig['slurm'].wait(job, timeout=timeout)
    except TimeoutError as e:
        raise TimeoutError(f'{e}:\n{log_of(rig, name, job)[-3000:]}')


def sbatch(rig, name, *args, sbatch_args=(), env=None):
    os.makedirs(os.path.join(rig['root'], 'work_dirs', 'slurm'), exist_ok=True)
    r = run_tool('sbatch', '--parsable', '-p', 'debug', '--gres=none', '--ntasks-per-node=1',
                 '--cpus-per-task=2', f'--job-name={name}', '--output=work_dirs/slurm/%x-%j.out',
                 *sbatch_args, TRAIN_SBATCH, *args, env=env or rig['env'], cwd=rig['root'])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def epoch_lrs(work_dir):
    """{epoch: lr of its last logged iteration} over every run (requeues too) in work_dir."""
    out = {}
    for path in sorted(glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        for line in open(path):
            rec = json.loads(line)
            if 'lr' in rec and 'epoch' in rec:
                out[rec['epoch']] = rec['lr']
    return out


def load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


def assert_same_training_state(a_path, b_path):
    a, b = load(a_path), load(b_path)
    assert a['meta']['iter'] == b['meta']['iter'] and a['meta']['epoch'] == b['meta']['epoch']
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:  # weights, BatchNorm statistics, MoCo's key encoder and queue
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    ga, gb = a['optimizer']['param_groups'], b['optimizer']['param_groups']
    assert [g['lr'] for g in ga] == [g['lr'] for g in gb]
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys() and sa
    for k in sa:  # SGD momentum buffers
        assert torch.equal(sa[k]['momentum_buffer'], sb[k]['momentum_buffer']), k
    assert a['param_schedulers'] == b['param_schedulers']


@pytest.fixture(scope='module')
def chain(rig):
    env = dict(rig['env'], UNLABELED=rig['unlabeled'], LABELED=rig['labeled'], GRES='',
               PRETRAIN_GPUS='1', DET_GPUS='1', SBATCH_ARGS='-p debug --cpus-per-task=2',
               MOCO_EPOCHS=' '.join(map(str, MOCO_EPOCHS)),
               DET_EPOCHS=' '.join(map(str, DET_EPOCHS)),
               MOCO_ARGS=f'--cfg-options train_dataloader.batch_size={MOCO_BATCH}',
               DET_ARGS='--cfg-options param_scheduler.0.end=2',  # warm-up: iteration 0 only
               # the semi-supervised stage: one epoch over one labeled image, in batches of one
               # labeled and one unlabeled image (the recipe's 1 + 4 at photo sizes: one
               # iteration 126 s on one core; 1 + 1: 29 s)
               SEMI='1', SEMI_ARGS='--cfg-options train_cfg.max_epochs=1 param_scheduler.0.end=2 '
               'train_dataloader.dataset.datasets.0.indices=1 train_dataloader.batch_size=2 '
               'train_dataloader.sampler.batch_size=2 train_dataloader.sampler.source_ratio=[1,1]',
               # a detector trained for 4 iterations scores every box under 0.05: keep them all
               # (the test job's config is the semi-supervised one: its detector's settings)
               TEST_ARGS='--cfg-options model.detector.test_cfg.rcnn.score_thr=0.0')
    t0 = time.time()
    r = run_tool('slurm/submit_pipeline.sh', env=env, cwd=rig['root'], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = [line.split('job ')[1].split()[0] for line in r.stdout.splitlines() if 'job ' in line]
    names = ['mocov2', 'det-s1', 'det-s2', 'det-s3', 'det-semi', 'det-test']
    assert len(jobs) == len(names), r.stdout
    states = {n: wait_done(rig, j, n) for n, j in zip(names, jobs)}
    print(f'rehearsal chain: {states} in {time.time() - t0:.0f} s')
    return dict(jobs=dict(zip(names, jobs)), states=states, env=env)


def test_chain_runs_the_real_configs_end_to_end(rig, chain):
    for name, job in chain['jobs'].items():
        assert chain['states'][name] == 'COMPLETED', (name, log_of(rig, name, job)[-4000:])
    work = os.path.join(rig['root'], 'work_dirs')
    moco = os.path.join(work, MOCO)
    # pretraining stopped at the keep epoch; its resume point is the full checkpoint
    assert os.path.exists(os.path.join(moco, 'keep_epoch_2.pth'))
    assert open(os.path.join(moco, 'last_checkpoint')).read().strip().endswith('/epoch_2.pth')
    lrs = epoch_lrs(moco)
    assert lrs[1] == pytest.approx(LR_MOCO)  # cosine over the whole schedule, not to the stop
    assert lrs[2] == pytest.approx(
        LR_MOCO * (1 + torch.cos(torch.tensor(torch.pi / MOCO_EPOCHS[1])).item()) / 2)
    lrs = {}
    for stage in ('s1-23e', 's2-27e', 's3-37e'):
        lrs.update(epoch_lrs(os.path.join(work, f'{DET}-{stage}_labeled')))
    # warm-up starts at lr/1000; the seed's steps x0.1 at the s1 and s2 boundaries
    assert lrs[1] == pytest.approx(LR_DET * 1e-3)
    assert lrs[2] == pytest.approx(LR_DET)
    assert lrs[3] == pytest.approx(LR_DET * 0.1)
    assert lrs[4] == pytest.approx(LR_DET * 0.01)
    # the semi-supervised stage: from the s1-s3 best, on the labeled and unlabeled images (read
    # out of the .sqsh), both models validated; the test job evaluates its best teacher
    semi = os.path.join(work, 'soft-teacher_faster-rcnn_r50-mocov2-pre_fpn_2xb5-12e_labeled-'
                        'unlabeled')
    semi_log = log_of(rig, 'det-semi', chain['jobs']['det-semi'])
    start = ','.join(f'work_dirs/{DET}-{s}_labeled' for s in ('s1-23e', 's2-27e', 's3-37e'))
    assert f'load_from=best-of://{start}' in semi_log, semi_log[-3000:]
    assert glob.glob(os.path.join(semi, 'best_teacher_coco_bbox_mAP_epoch_1.pth')), os.listdir(semi)
    state = load(os.path.join(semi, 'epoch_1.pth'))['state_dict']
    assert any(k.startswith('teacher.') for k in state) and any(k.startswith('student.')
                                                                 for k in state)
    test_log = log_of(rig, 'det-test', chain['jobs']['det-test'])
    assert test_log.count(' Average ') == 12, test_log[-3000:]
    assert 'best validation score' in test_log  # the seed reported its best checkpoint
    assert semi in test_log and 'model: the teacher' in test_log, test_log[-3000:]


def test_explicit_resume_path_through_sbatch_is_honoured(rig, chain):
    """`--resume PATH` among the job's arguments wins over the automatic choice: a new folder
    continues pretraining from its epoch 1 and replays epoch 2 exactly (loader workers
    included)."""
    moco = os.path.join(rig['root'], 'work_dirs', MOCO)
    new = os.path.join(rig['root'], 'work_dirs', 'moco-from-epoch-1')
    start = os.path.join(moco, 'epoch_1.pth')
    job = sbatch(rig, 'moco-resume', MOCO_CFG, '--work-dir', new, '--data-root',
                 rig['unlabeled'], '--resume', start, *moco_opts(MOCO_EPOCHS[0]))
    assert wait_done(rig, job, 'moco-resume') == 'COMPLETED', log_of(rig, 'moco-resume', job)
    assert f'resuming from {start} (--resume)' in log_of(rig, 'moco-resume', job)
    assert not os.path.exists(os.path.join(new, 'epoch_1.pth'))
    assert_same_training_state(os.path.join(new, 'epoch_2.pth'), os.path.join(moco, 'epoch_2.pth'))


def test_resubmitting_with_another_moco_checkpoint_refuses(rig, chain):
    """Same pipeline, another MOCO file: refused at submit time (s1's folder was trained from
    the first file), before any job is queued, with the ways on."""
    moco_dir = os.path.join(rig['root'], 'work_dirs', MOCO)
    other = os.path.join(rig['root'], 'other-moco.pth')
    shutil.copy(os.path.join(moco_dir, 'keep_epoch_2.pth'), other)
    env = dict(chain['env'], MOCO=other)
    r = run_tool('slurm/submit_pipeline.sh', env=env, cwd=rig['root'], timeout=120)
    assert r.returncode == 2 and not r.stdout, r.stdout + r.stderr
    assert 'trained from other inputs' in r.stderr and 'other-moco.pth' in r.stderr, r.stderr
    assert 'another folder' in r.stderr and '--allow-input-change' in r.stderr, r.stderr


@pytest.fixture(scope='module')
def reference(rig):
    """Uninterrupted MoCo run over the whole schedule, outside Slurm. Only its last epoch is
    compared, so only that one is saved (a save changes no training state)."""
    epochs = MOCO_EPOCHS[1]
    work = os.path.join(rig['root'], 'work_dirs', f'moco-reference-{epochs}e')
    r = run_tool('train.py', MOCO_CFG, '--work-dir', work, '--data-root', rig['unlabeled'],
                 *moco_opts(epochs, epochs), f'default_hooks.checkpoint.interval={epochs}',
                 env=rig['env'], cwd=rig['root'], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return os.path.join(work, f'epoch_{epochs}.pth')


@pytest.fixture(scope='module')
def continued(rig, chain):
    """The documented continuation (same config, the schedule's last epoch as the stop) as one
    job under a 2-minute limit with SIGUSR1 45 s before it, requeued once (as a preemption would)
    right after it first resumed. slurmctld checks limits every 30 s and sends the signal up to
    30 s early, so it comes 45-70 s into each start, while the 64 iterations left (8 epochs of
    8) train for about 120 s at one thread (1.9 s each): the job stops at its limit at least
    once, saves, requeues itself and goes on, well within MAX_RESTARTS."""
    t0 = time.time()
    job = sbatch(rig, 'moco-continue', MOCO_CFG, '--data-root', rig['unlabeled'],
                 *moco_opts(MOCO_EPOCHS[1]), sbatch_args=('--time=2', '--signal=USR1@45'))
    deadline = time.time() + 300
    while 'resuming from' not in log_of(rig, 'moco-continue', job):
        assert time.time() < deadline and rig['slurm'].job_state(job) in ('PENDING', 'RUNNING')
        time.sleep(1)
    rig['slurm'].requeue(job)
    state = wait_done(rig, job, 'moco-continue', timeout=1200)
    log = log_of(rig, 'moco-continue', job)
    assert state == 'COMPLETED', log[-4000:]
    print(f'continuation: {time.time() - t0:.0f} s')
    return log


def test_continuing_pretraining_after_the_keep_epoch_keeps_optimizer_and_lr(rig, continued,
                                                                            reference):
    """The continuation, requeued right after it resumed, ends exactly where an uninterrupted
    run ends: weights, LR, momentum buffers, scheduler state."""
    assert 'restart 1' in continued
    assert 'keep_epoch' not in continued.split('resuming from', 1)[1].split('\n', 1)[0]
    moco = os.path.join(rig['root'], 'work_dirs', MOCO)
    assert_same_training_state(os.path.join(moco, f'epoch_{MOCO_EPOCHS[1]}.pth'), reference)


def test_time_limit_stops_saves_requeues_and_matches_uninterrupted_run(rig, continued, reference):
    """The continuation's time-limit stops: each saved its current iteration and requeued the
    job, the next start resumed from that file (nothing lost), every restart is the one requeue
    or a time-limit stop, and the run ends with the uninterrupted run's state and no in-epoch
    checkpoint left."""
    limit_stops = re.findall(r'stop requested \(SIGUSR1[^)]*\): saved \S+/iter_(\d+)\.pth',
                             continued)
    assert limit_stops, continued[-4000:]
    saved = re.findall(r'saved \S+/iter_(\d+)\.pth', continued)  # the requeue's SIGTERM too
    resumed = re.findall(r'resuming from \S+/iter_(\d+)\.pth', continued)
    assert resumed == saved, continued[-4000:]
    restarts = [int(n) for n in re.findall(r'^job \d+ restart (\d+) ', continued, re.M)]
    assert restarts == list(range(len(limit_stops) + 2)), continued[-4000:]
    print(f'time limit: stopped at iterations {limit_stops}')
    moco = os.path.join(rig['root'], 'work_dirs', MOCO)
    assert_same_training_state(os.path.join(moco, f'epoch_{MOCO_EPOCHS[1]}.pth'), reference)
    assert not glob.glob(os.path.join(moco, 'iter_*.pth'))  # superseded by epoch checkpoints
