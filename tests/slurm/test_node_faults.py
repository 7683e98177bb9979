"""Faults of one rank or node of a multi-process run: an unreadable PNG that a rank other than
0 reads, a node that dies without a signal (the time-based in-epoch checkpoint), and the time-limit signal to a job across two nodes. The Slurm tests run on the
two-node cluster and work folder of tests/slurm/test_multinode.py with a tiny MoCo (ResNet-18,
24 px PNGs, one epoch), whose uninterrupted two-node run they must match."""
import glob
import os
import re
import signal
import socket
import time
import uuid

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from PIL import Image

import custom_modules  # noqa: F401  (registers the hooks and the loop)
from custom_modules.engine.hooks import time_limit_hook
from toolkit.resume_policy import latest_resume_point
from helpers import REPO, run_tool
from slurm_jobs import assert_two_ranks_in_step, cluster_env, probes, slurm_train, wait_for

MOCO_DEMO = os.path.join(REPO, 'configs', 'mocov2', 'mocov2_resnet50_1xb16-coslr-8e_synthetic96.py')
INTERVAL_MIN = 0.04  # the in-epoch checkpoint interval of the kill test: 2.4 s

# The real configs' hooks, TimeLimitHook third as there (so `custom_hooks.2.save_every_minutes`
# is the option a user gives), then the test's probes.
MOCO_TINY = '''_base_ = {base!r}
custom_imports = dict(imports=['custom_modules', 'custom_modules.datasets.unlabeled', 'rank_probe',
                               'faults_probe'], allow_failed_imports=False)
train_dataloader = dict(batch_size=2, num_workers={workers}, persistent_workers={persistent},
                        sampler=dict(type='DefaultSampler', shuffle={shuffle}),
                        dataset=dict(data_root={root!r}))
model = dict(backbone=dict(depth=18), neck=dict(in_channels=512, hid_channels=128), queue_len=64)
param_scheduler = [dict(type='CosineAnnealingLR', T_max=1, by_epoch=True, begin=0, end=1)]
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
custom_hooks = [dict(type='FiniteLossHook'), dict(type='EpochSeedHook'), dict(type='TimeLimitHook'),
                dict(type='UnreadableImageHook'), dict(type='RankProbeHook'),
                dict(type='IterProbeHook')]
'''

# Loaded by the training processes (custom_imports): each rank appends every iteration it
# starts, with the time, to iters_rank<R>.txt in the work folder; ``sleep`` slows the kill test's
# epoch down to several intervals whatever this machine's speed.
FAULTS_PROBE = '''
import os, time
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class IterProbeHook(Hook):
    def __init__(self, sleep=0.0):  # seconds added to each iteration
        self.sleep = sleep

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        with open(os.path.join(runner.work_dir, 'iters_rank%d.txt' % get_rank()), 'a') as f:
            f.write('%d %f\\n' % (runner.iter, time.time()))
        time.sleep(self.sleep)
'''


def _pngs(folder, n, bad=()):
    """``n`` 24 px N.PNG files; those numbered in ``bad`` cut in half (undecodable)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        path = os.path.join(folder, f'{i}.PNG')
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
        if i in bad:
            data = open(path, 'rb').read()
            open(path, 'wb').write(data[:len(data) // 2])
    return [os.path.join(folder, f'{i}.PNG') for i in bad]


def _moco_config(two_node_env, name, data, workers=0, shuffle=True):
    lib = os.path.join(two_node_env['root'], 'audit-lib')  # on the runs' PYTHONPATH
    with open(os.path.join(lib, 'faults_probe.py'), 'w') as f:
        f.write(FAULTS_PROBE)
    path = os.path.join(two_node_env['root'], 'configs', f'{name}.py')
    with open(path, 'w') as f:
        f.write(MOCO_TINY.format(base=MOCO_DEMO, root=data, workers=workers,
                                 persistent=workers > 0, shuffle=shuffle))
    return path


def _iters(work, rank):
    path = os.path.join(work, f'iters_rank{rank}.txt')
    if not os.path.exists(path):
        return []
    return [(int(i), float(t)) for i, t in (line.split() for line in open(path))]


# ------------------------------------------------------- an unreadable image on rank 1

@pytest.mark.slow
def test_unreadable_png_on_rank_1_is_logged_by_name(two_node_env):
    """Rank 1's unreadable files reached no log at the time (mmengine gives ranks other
    than 0 no log file and an ERROR-level console), and rank 0's summary named only 3 of them."""
    data = os.path.join(two_node_env['root'], 'unlabeled-bad')
    bad = _pngs(data, 8, bad=(1, 3, 5, 7))  # odd indices: rank 1's, unshuffled
    config = _moco_config(two_node_env, 'moco_bad_pngs', data, workers=1, shuffle=False)
    work = os.path.join(two_node_env['work_dirs'], 'bad_pngs')
    with socket.socket() as s:  # not dist_train.sh's port from the folder: others' runs use it
        s.bind(('127.0.0.1', 0))
        e = dict(two_node_env['env'], PORT=str(s.getsockname()[1]))
    run_tool('dist_train.sh', config, '2', '--work-dir', work, env=e, cwd=two_node_env['root'],
             check=True)
    assert len(_iters(work, 0)) == 2 and len(_iters(work, 1)) == 2
    [log_dir] = [d for d in glob.glob(os.path.join(work, '*')) if os.path.isdir(d)
                 and os.path.exists(os.path.join(d, os.path.basename(d) + '.log'))]
    main = open(os.path.join(log_dir, os.path.basename(log_dir) + '.log')).read()
    assert '4 unreadable images skipped so far' in main, main[-3000:]
    rank1 = os.path.join(log_dir, 'unreadable_images_rank1.log')
    assert os.path.exists(rank1), f'rank 1 logged them nowhere: {os.listdir(log_dir)}'
    text = open(rank1).read()
    for path in bad:
        assert text.count(f'unreadable image {path} ') == 1, text
    assert rank1 in main  # the summary says where rank 1's files are named


# ------------------------------------------------ the timed in-epoch checkpoint, unit level

class _ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(1, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        out = self.fc(torch.stack(inputs))
        return dict(loss=(out - torch.rand_like(out)).pow(2).mean())


class _Clock:
    """TimeLimitHook's clock (time.monotonic), advanced by the test."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Steps(Hook):
    """Advances the clock each iteration, records what the work folder holds after it, and
    dies (as a killed process, without any hook) before iteration ``die_at``."""

    priority = 'LOWEST'

    def __init__(self, clock, die_at=None):
        self.clock, self.die_at, self.seen = clock, die_at, []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.die_at:
            raise KeyboardInterrupt
        self.clock.now += 40

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.seen.append(sorted(f for f in os.listdir(runner.work_dir) if f.startswith('iter_')))


def _toy_runner(work, steps, every=1.0, **kw):
    """8 iterations per epoch, 2 epochs, the time-limit hook saving every ``every`` minutes."""
    torch.manual_seed(0)  # the same initial weights in every run
    return Runner(
        model=_ToyModel(), work_dir=str(work), experiment_name=f'faults-{uuid.uuid4().hex}',
        train_dataloader=dict(dataset=[dict(inputs=torch.full((1, ), float(i))) for i in range(8)],
                              batch_size=1, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_sampler=dict(type='ResumableBatchSampler')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=12),
        train_cfg=dict(type='ResumableEpochBasedTrainLoop', max_epochs=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        custom_hooks=[dict(type='TimeLimitHook', save_every_minutes=every), steps],
        randomness=dict(seed=3), **kw)


def test_timed_checkpoint_keeps_the_newest_and_resumes_from_it(tmp_path, monkeypatch,
                                                               signals_restored):
    """A node that dies lost every iteration since the epoch checkpoint; now one every
    ``save_every_minutes`` (rank 0's clock), only the newest kept, a resume point that continues
    exactly as the run would have."""
    clock = _Clock()
    monkeypatch.setattr(time_limit_hook, 'monotonic', clock, raising=False)
    steps = _Steps(clock)
    reference = _toy_runner(tmp_path / 'reference', steps)
    reference.train()
    # 40 s per iteration, every minute: after iterations 2, 4, 6 of each epoch (not after its
    # last: the epoch checkpoint comes then), each replacing the one before
    assert steps.seen[:8] == [[], ['iter_2.pth'], ['iter_2.pth'], ['iter_4.pth'], ['iter_4.pth'],
                              ['iter_6.pth'], ['iter_6.pth'], ['iter_6.pth']]
    assert steps.seen[8:10] == [[], ['iter_10.pth']]  # the epoch checkpoint dropped iter_6
    work = tmp_path / 'killed'
    with pytest.raises(KeyboardInterrupt):
        _toy_runner(work, _Steps(clock, die_at=13)).train()
    assert latest_resume_point(str(work)) == str(work / 'iter_12.pth')  # what --resume takes
    resumed = _toy_runner(work, _Steps(clock), resume=True, load_from=str(work / 'iter_12.pth'))
    resumed.train()
    assert resumed.iter == reference.iter == 16
    assert torch.equal(resumed.model.fc.weight, reference.model.fc.weight)
    assert torch.equal(resumed.model.fc.bias, reference.model.fc.bias)


def test_timed_checkpoint_off(tmp_path, monkeypatch, signals_restored):
    clock = _Clock()
    monkeypatch.setattr(time_limit_hook, 'monotonic', clock, raising=False)
    steps = _Steps(clock)
    _toy_runner(tmp_path / 'work', steps, every=None).train()
    assert not any(steps.seen)


# --------------------------------------------- the stop signal to one rank of two processes

class _SignalOneRank(Hook):
    """Sends SIGUSR1 to this process, on rank ``rank`` only, before iteration ``at``; records
    every iteration this rank starts."""

    def __init__(self, rank, at):
        self.rank, self.at, self.started = rank, at, []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        from mmengine.dist import get_rank
        self.started.append(runner.iter)
        if get_rank() == self.rank and runner.iter == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)


def _one_rank_signalled(rank, init_file, work, signalled, out):
    import torch.distributed as dist
    os.environ.pop('SLURM_JOB_ID', None)  # no requeue: the stop and the save are the test
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    hook = _SignalOneRank(signalled, at=2)
    # 8 samples over 2 ranks: 4 iterations per epoch, 2 epochs
    runner = _toy_runner(work, hook, every=None)
    try:
        runner.train()
        code = 0
    except SystemExit as e:
        code = e.code
    dist.destroy_process_group()
    torch.save(dict(code=code, started=hook.started), f'{out}.{rank}')


@pytest.mark.slow
@pytest.mark.parametrize('signalled', [0, 1])
def test_the_stop_signal_to_one_rank_stops_both_with_one_save(tmp_path, signalled):
    """A rank that never receives the signal (Slurm signals every task, but a task may miss it:
    a node whose slurmd lags, a signal sent by hand) still stops after the same iteration as the
    other: TimeLimitHook agrees on the stop in an all_reduce every iteration; one checkpoint."""
    import torch.multiprocessing as mp
    work, out = tmp_path / 'work', tmp_path / 'out'
    ctx = mp.start_processes(_one_rank_signalled, nprocs=2, join=False, start_method='spawn',
                             args=(str(tmp_path / 'init'), str(work), signalled, str(out)))
    deadline = time.time() + 300
    while not ctx.join(timeout=1):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            raise AssertionError('the two ranks did not end in 300 s (one waits for the other)')
    got = [torch.load(f'{out}.{r}') for r in (0, 1)]
    assert [g['code'] for g in got] == [time_limit_hook.EXIT_TIME_LIMIT] * 2, got
    assert [g['started'] for g in got] == [[0, 1, 2]] * 2, got
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['iter_3.pth']
    assert latest_resume_point(str(work)) == str(work / 'iter_3.pth')


# ------------------------------------------------------------------ two nodes, Slurm

@pytest.fixture(scope='module')
def tiny(two_node_env):
    data = os.path.join(two_node_env['root'], 'unlabeled-64')
    _pngs(data, 64)
    return _moco_config(two_node_env, 'moco_tiny', data)


@pytest.fixture(scope='module')
def tiny_reference(two_node_env, slurm2, tiny):
    """The tiny MoCo across the two nodes, uninterrupted, with the default interval."""
    work = os.path.join(two_node_env['work_dirs'], 'tiny_reference')
    slurm_train(two_node_env, slurm2, tiny, work)
    p = probes(work)
    assert sorted(p) == [0, 1] and p[0]['iter'] == 16  # 64 images / (2 ranks x batch 2)
    return p[0]


def _sbatch(two_node_env, slurm2, config, work, name, *args, audit=None):
    r = run_tool('sbatch', '--parsable', '-p', 'debug', '--gres=none', '--nodes=2',
                 '--ntasks-per-node=1', '--cpus-per-task=1', f'--job-name={name}',
                 os.path.join(REPO, 'tools', 'slurm', 'train.sbatch'), config, '--work-dir', work,
                 *args, env=cluster_env(two_node_env, slurm2, audit, REPO=REPO),
                 cwd=two_node_env['root'])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _wait_done(slurm2, job, log, timeout=300):
    try:
        return slurm2.wait(job, timeout=timeout)
    except TimeoutError as e:
        raise TimeoutError(f'{e}:\n{open(log).read()[-3000:] if os.path.exists(log) else ""}')


def _running(slurm2, job):
    return lambda: slurm2.job_state(job) in ('PENDING', 'RUNNING')


def _started(work, n):
    def started():
        return len(_iters(work, 0)) >= n
    started.__name__ = f'iteration {n} in {work}'
    return started


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.multinode
def test_time_limit_signal_to_a_two_node_job(two_node_env, slurm2, tiny, tiny_reference):
    """SIGUSR1 (the job's --signal) to both ranks on two nodes: both stop after the same
    iteration, rank 0 saves iter_N.pth and requeues the job, which continues from there and ends
    with the uninterrupted run's weights."""
    work = os.path.join(two_node_env['work_dirs'], 'tiny_usr1')
    job = _sbatch(two_node_env, slurm2, tiny, work, 'mn-usr1')
    log = os.path.join(two_node_env['root'], f'slurm-mn-usr1-{job}.out')
    wait_for(_started(work, 5), _running(slurm2, job), timeout=300, log=log)
    slurm2.run('scancel', '--signal=USR1', job)
    assert _wait_done(slurm2, job, log) == 'COMPLETED', open(log).read()[-4000:]
    out = open(log).read()
    [saved] = re.findall(r'saved \S+/iter_(\d+)\.pth', out)
    assert 'restart 1 on tnode[1-2]' in out, out[-4000:]
    assert f'resuming from {work}/iter_{saved}.pth' in out, out[-4000:]
    for rank in (0, 1):  # both stopped after iteration saved - 1, the restart started at saved
        started = [i for i, _ in _iters(work, rank)]
        assert started == list(range(16)), (rank, saved, started)
    p = probes(work)
    assert p[0]['iter'] == p[1]['iter'] == 16
    assert p[0]['weights'] == p[1]['weights'] == tiny_reference['weights']
    assert not glob.glob(os.path.join(work, 'iter_*.pth'))  # superseded by epoch_1.pth


# The two-node detector validating after each of its 2 epochs with a loader worker, each
# validation iteration a second longer; every rank appends the (epoch, batch, pid) of each
# validation iteration it starts to val_rank<R>.txt in the work folder.
VAL_PROBE = '''
import os, time
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class ValProbeHook(Hook):
    def before_val_iter(self, runner, batch_idx, data_batch=None):
        with open(os.path.join(runner.work_dir, 'val_rank%d.txt' % get_rank()), 'a') as f:
            f.write('%d %d %d\\n' % (runner.epoch, batch_idx, os.getpid()))
        time.sleep(1)
'''
DET_VAL = '''_base_ = {base!r}
custom_imports = dict(imports=['custom_modules', 'rank_probe', 'val_probe'],
                      allow_failed_imports=False)
val_dataloader = dict(num_workers=1, persistent_workers=True)
train_cfg = dict(max_epochs=2, val_interval=1)
custom_hooks = [dict(type='FiniteLossHook'), dict(type='EpochSeedHook'), dict(type='TimeLimitHook'),
                dict(type='RankProbeHook'), dict(type='ValProbeHook')]
'''


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.multinode
def test_time_limit_signal_during_validation_on_two_nodes(two_node_env, slurm2, moco_checkpoint):
    """SIGUSR1 while both ranks of a two-node job validate, with a loader worker each: no
    deadlock, both stop in the same validation iteration, the job requeues itself, and the
    restarted job validates that epoch again (all of it, on both ranks) before it goes on."""
    with open(os.path.join(two_node_env['root'], 'audit-lib', 'val_probe.py'), 'w') as f:
        f.write(VAL_PROBE)
    config = os.path.join(two_node_env['root'], 'configs', 'det_val.py')
    with open(config, 'w') as f:
        f.write(DET_VAL.format(base=two_node_env['det']))
    work = os.path.join(two_node_env['work_dirs'], 'det_val_usr1')
    job = _sbatch(two_node_env, slurm2, config, work, 'mn-val-usr1', '--pretrained',
                  moco_checkpoint[0])
    log = os.path.join(two_node_env['root'], f'slurm-mn-val-usr1-{job}.out')

    def validating():
        return os.path.exists(os.path.join(work, 'val_rank0.txt'))
    validating.__name__ = f'first validation in {work}'
    wait_for(validating, _running(slurm2, job), timeout=300, log=log)
    slurm2.run('scancel', '--signal=USR1', job)
    assert _wait_done(slurm2, job, log) == 'COMPLETED', open(log).read()[-4000:]
    out = open(log).read()
    assert out.count('stop requested (SIGUSR1') == 1 and 'restart 1 on tnode[1-2]' in out, \
        out[-4000:]
    assert 'validating epoch 1 again' in out, out[-4000:]
    for rank in (0, 1):
        seen = [tuple(map(int, line.split())) for line in
                open(os.path.join(work, f'val_rank{rank}.txt'))]
        starts = list(dict.fromkeys(pid for _, _, pid in seen))
        assert len(starts) == 2, (rank, seen)  # stopped once, restarted once
        first = [(e, b) for e, b, pid in seen if pid == starts[0]]
        assert first and all(e == 1 for e, _ in first) and len(first) < 2, (rank, seen)
        assert [(e, b) for e, b, pid in seen if pid == starts[1]] == [
            (1, 0), (1, 1), (2, 0), (2, 1)], (rank, seen)
    p = assert_two_ranks_in_step(work)
    assert p[0]['iter'] == 2


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.multinode
def test_kill_9_of_one_rank_loses_at_most_the_interval(two_node_env, slurm2, tiny,
                                                       tiny_reference):
    """``kill -9`` of rank 1 (a node that dies) in a job saving every 2.4 s
    (`--cfg-options custom_hooks.2.save_every_minutes=0.04`): the restarted job continues from
    the newest in-epoch checkpoint, at most the interval (plus the iteration then running)
    before the kill, and ends with the uninterrupted run's weights."""
    work = os.path.join(two_node_env['work_dirs'], 'tiny_kill9')
    audit = os.path.join(two_node_env['root'], 'audit', 'tiny_kill9')
    interval = 60 * INTERVAL_MIN
    job = _sbatch(two_node_env, slurm2, tiny, work, 'mn-kill9', '--cfg-options',
                  f'custom_hooks.2.save_every_minutes={INTERVAL_MIN}', 'custom_hooks.5.sleep=0.4',
                  audit=audit)
    log = os.path.join(two_node_env['root'], f'slurm-mn-kill9-{job}.out')

    def long_after_a_save():  # long enough that epoch checkpoints alone would lose more
        started = _iters(work, 0)
        return (glob.glob(os.path.join(work, 'iter_*.pth')) and started
                and time.time() - started[0][1] > interval + 4)
    long_after_a_save.__name__ = f'an in-epoch checkpoint and {interval + 4:.0f} s of training'
    wait_for(long_after_a_save, _running(slurm2, job), timeout=300, log=log)
    [rank1] = [n for n in os.listdir(audit) if n.startswith('rank1-')]
    os.kill(int(rank1.split('-')[1].split('.')[0]), signal.SIGKILL)
    killed = time.time()
    assert _wait_done(slurm2, job, log) == 'FAILED'
    newest = glob.glob(os.path.join(work, 'iter_*.pth'))
    assert len(newest) == 1, newest  # only the newest kept
    lost = killed - os.path.getmtime(newest[0])
    started = _iters(work, 0)
    longest = max(b[1] - a[1] for a, b in zip(started, started[1:]))
    # a save is due after the first iteration that ends an interval after the last one
    assert lost <= interval + longest + 1, (lost, interval, longest)
    slurm2.requeue(job)  # as Slurm requeues a job whose node failed
    assert _wait_done(slurm2, job, log) == 'COMPLETED', open(log).read()[-4000:]
    out = open(log).read()
    assert f'resuming from {newest[0]}' in out, out[-4000:]
    p = probes(work)
    assert p[0]['iter'] == 16 and p[0]['weights'] == tiny_reference['weights']
    print(f'kill -9: {lost:.1f} s lost (interval {interval:.1f} s, longest iteration '
          f'{longest:.1f} s)')
