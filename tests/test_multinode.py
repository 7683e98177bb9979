"""The Slurm launchers across two nodes: a cluster of two emulated nodes (two slurmd on this
machine, one CPU each, see slurm_cluster.py) and one task per node, so every rank pair talks
across "nodes" (gloo over TCP, rendezvous at the first node's NodeAddr). The chain a user runs:
MoCo pretraining -> detection fine-tuning from its checkpoint -> a requeued sbatch job -> test.py,
with the configs shrunk as in test_slurm.py. Every Python process of a run loads a
sitecustomize.py whose audit hook records its rank, its node and the files it writes, so the tests
can tell which node each rank ran on and that rank 1 wrote nothing but its probe."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from conftest import write_sample
from test_slurm import (DET, DET_WRAPPER, MOCO_DEMO, MOCO_WRAPPER, _reached_epoch, _wait_for,
                        assert_two_ranks_in_step, probes)

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, 'tests')
TRAIN_SH = os.path.join(REPO, 'tools', 'slurm_train.sh')
TEST_SH = os.path.join(REPO, 'tools', 'slurm_test.sh')
DET_EPOCHS = 4  # the requeue comes after epoch 2

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


@pytest.fixture(scope='module')
def env(module_tmp, synthetic_root):
    """Working folder with tiny labeled data, wrapper configs and the audit hook."""
    root = module_tmp('multinode')
    labeled = str(root / 'labeled')
    for split, ids in (('training', (1, 2)), ('validation', (3, 4, 5, 6))):
        for i in ids:
            write_sample(labeled, split, i, size=(96, 64), labels=('dog', 'starfish'),
                         bboxes=((10, 8, 50, 40), (60, 30, 90, 60)))
    cfg_dir = root / 'configs'
    cfg_dir.mkdir()
    det = cfg_dir / 'det.py'
    det.write_text(DET_WRAPPER.format(
        base=os.path.join(REPO, 'configs', 'faster_rcnn', f'{DET}-s1-23e_labeled.py'),
        root=labeled, cache=str(root / 'index-cache'),
        extra=f'train_cfg = dict(max_epochs={DET_EPOCHS}, val_interval={DET_EPOCHS})'))
    moco = cfg_dir / 'moco.py'
    moco.write_text(MOCO_WRAPPER.format(
        base=os.path.join(REPO, 'configs', 'mocov2', f'{MOCO_DEMO}.py'),
        root=os.path.join(synthetic_root, 'unlabeled')) + MOCO_MULTINODE)
    audit_lib = root / 'audit-lib'
    audit_lib.mkdir()
    (audit_lib / 'sitecustomize.py').write_text(SITECUSTOMIZE)
    work_dirs = root / 'work_dirs'
    work_dirs.mkdir()
    proc_env = dict(os.environ, PYTHON=sys.executable, MN_AUDIT_ROOT=str(work_dirs),
                    PYTHONPATH=os.pathsep.join([str(audit_lib), REPO, TESTS,
                                                os.environ.get('PYTHONPATH', '')]))
    return dict(root=str(root), labeled=labeled, det=str(det), moco=str(moco),
                work_dirs=str(work_dirs), env=proc_env)


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
    r = subprocess.run([TRAIN_SH, 'debug', os.path.basename(work), config, work, *args], env=e,
                       cwd=env['root'], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    print(f'{os.path.basename(work)}: {time.time() - t:.0f} s')
    return r


def assert_across_nodes(work, audit):
    """Two ranks on two different nodes, in step (disjoint samples, equal weights), the same
    rendezvous on both, and only rank 0 writing checkpoints and logs."""
    p = assert_two_ranks_in_step(work)
    a = audit_records(audit)
    assert sorted(a) == [0, 1], a
    assert (a[0]['node'], a[0]['node_id']) == ('tnode1', '0'), a[0]
    assert (a[1]['node'], a[1]['node_id']) == ('tnode2', '1'), a[1]
    # the first node's NodeAddr (its name does not resolve), the port from the job id
    assert a[0]['master'] == a[1]['master'] and a[0]['master'][0] == '127.0.0.1', a
    assert a[0]['master'][1] == p[0]['master_port'] != '29500'
    rel = {k: {os.path.relpath(w, work) for w in v['writes'] if w.startswith(work + os.sep)}
           for k, v in a.items()}
    assert rel[1] == {'rank1.json'}, f'rank 1 wrote {sorted(rel[1])}'
    assert any(w.endswith('.pth') for w in rel[0]) and any(w.endswith('.log') for w in rel[0])
    logs = [f for _, _, fs in os.walk(work) for f in fs if f.endswith('.log')]
    assert len(logs) == 1, logs
    return p


@pytest.mark.parametrize('case', ['not-whole-nodes', 'more-nodes-than-partition',
                                  'more-cpus-than-a-node', 'more-tasks-than-allocation'])
def test_mismatched_request_fails_at_once(env, slurm2, tmp_path, case):
    """A request that cannot run fails in seconds with one clear line, instead of waiting in
    the queue forever (Slurm's default EnforcePartLimits=NO) or at rendezvous."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    calls = tmp_path / 'srun.log'
    (bin_dir / 'srun').write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n'
                                  f'exec {shutil.which("srun")} "$@"\n')
    (bin_dir / 'srun').chmod(0o755)
    extra = dict(GPUS='2', GPUS_PER_NODE='1', CPUS_PER_TASK='1', GRES='')
    cmd = [TRAIN_SH, 'debug', 'mismatch', env['det'], str(tmp_path / 'work')]
    if case == 'not-whole-nodes':
        extra.update(GPUS='3', GPUS_PER_NODE='2')
        want = 'error: GPUS=3 is not a multiple of GPUS_PER_NODE=2'
    elif case == 'more-nodes-than-partition':
        extra.update(GPUS='3')
        want = 'error: partition debug has 2 nodes: GPUS=3 at GPUS_PER_NODE=1 needs 3'
    elif case == 'more-cpus-than-a-node':
        extra.update(CPUS_PER_TASK='2')
        want = 'error: partition debug has at most 1 CPUs per node'
    else:  # a 2 x 1 allocation, then a 2 x 2 launch inside it: srun refuses the step
        extra.update(GPUS='4', GPUS_PER_NODE='2')
        cmd = ['salloc', '-p', 'debug', '--nodes=2', '--ntasks-per-node=1', '--cpus-per-task=1',
               *cmd]
        want = 'More processors requested than permitted'
    e = cluster_env(env, slurm2, **extra)
    e['PATH'] = f'{bin_dir}{os.pathsep}{e["PATH"]}'
    t = time.time()
    r = subprocess.run(cmd, env=e, cwd=env['root'], capture_output=True, text=True, timeout=120)
    elapsed = time.time() - t
    assert r.returncode != 0 and want in r.stderr, r.stderr
    assert elapsed < 30, elapsed
    if case != 'more-tasks-than-allocation':  # the launcher's own checks: before any srun
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith(want)
        assert not calls.exists(), calls.read_text()
    else:
        assert calls.exists()
    assert not os.path.exists(tmp_path / 'work')


@pytest.fixture(scope='module')
def moco_run(env, slurm2):
    work = os.path.join(env['work_dirs'], 'moco')
    audit = os.path.join(env['root'], 'audit', 'moco')
    slurm_train(env, slurm2, env['moco'], work, audit=audit)
    return work, audit


@pytest.fixture(scope='module')
def det_run(env, slurm2, moco_run):
    """Fine-tuning from the two-node MoCo checkpoint, uninterrupted: also the reference of the
    requeue test (same config, inputs and world size)."""
    work = os.path.join(env['work_dirs'], 'det')
    audit = os.path.join(env['root'], 'audit', 'det')
    moco_ckpt = os.path.join(moco_run[0], 'epoch_2.pth')
    slurm_train(env, slurm2, env['det'], work, '--pretrained', moco_ckpt, audit=audit)
    return work, audit, moco_ckpt


def test_moco_across_two_nodes(moco_run):
    work, audit = moco_run
    p = assert_across_nodes(work, audit)
    # auto_scale_lr saw the world size: total batch 2 x 4 = 8 against base 4
    assert p[0]['lrs']['0'] == pytest.approx(0.06) == p[1]['lrs']['0']
    log = next(os.path.join(d, f) for d, _, fs in os.walk(work) for f in fs if f.endswith('.log'))
    assert 'current batch size is 8' in open(log).read()


def test_detection_across_two_nodes(det_run):
    work, audit, _ = det_run
    p = assert_across_nodes(work, audit)
    assert p[0]['iter'] == DET_EPOCHS  # 2 images / (2 ranks x batch 1) per epoch


def test_requeued_two_node_job_resumes_and_matches_uninterrupted_run(env, slurm2, det_run):
    reference = probes(det_run[0])[0]
    work = os.path.join(env['work_dirs'], 'requeue')
    t = time.time()
    r = subprocess.run(['sbatch', '--parsable', '-p', 'debug', '--gres=none', '--nodes=2',
                        '--ntasks-per-node=1', '--cpus-per-task=1', '--job-name=mn-requeue',
                        os.path.join(REPO, 'tools', 'slurm', 'train.sbatch'), env['det'],
                        '--work-dir', work, '--pretrained', det_run[2]],
                       env=cluster_env(env, slurm2, REPO=REPO), cwd=env['root'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    _wait_for(_reached_epoch(work, 2),
              lambda: slurm2.job_state(job) in ('PENDING', 'RUNNING'))
    slurm2.requeue(job)
    assert slurm2.wait(job, timeout=600) == 'COMPLETED'
    log = open(os.path.join(env['root'], f'slurm-mn-requeue-{job}.out')).read()
    assert 'restart 1 on tnode[1-2]' in log and 'resumed epoch' in log, log[-3000:]
    p = probes(work)
    assert sorted(p) == [0, 1] and p[0]['world_size'] == 2
    assert p[0]['iter'] == p[1]['iter'] == reference['iter']
    assert p[0]['weights'] == p[1]['weights'] == reference['weights']
    print(f'requeue: {time.time() - t:.0f} s')


SUMMARY = re.compile(r'^ Average (?:Precision|Recall) .*= +(-?\d+\.\d+)$', re.M)


def test_test_py_across_two_nodes_matches_one_process(env, slurm2, det_run):
    ckpt = os.path.join(det_run[0], f'epoch_{DET_EPOCHS}.pth')
    # every box scored: an untrained detector's scores fall under the default threshold
    args = ['--data-root', env['labeled'], '--split', 'validation', '--batch-size', '1',
            '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0']
    t = time.time()
    e = cluster_env(env, slurm2, GPUS='2', GPUS_PER_NODE='1', CPUS_PER_TASK='1', GRES='')
    two = subprocess.run([TEST_SH, 'debug', 'mn-test', env['det'], ckpt, *args,
                          '--work-dir', os.path.join(env['work_dirs'], 'test2')], env=e,
                         cwd=env['root'], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    t2 = time.time() - t
    one = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'test.py'), env['det'], ckpt,
                          *args, '--work-dir', os.path.join(env['work_dirs'], 'test1')],
                         env=env['env'], cwd=env['root'], capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-3000:]
    numbers = SUMMARY.findall(one.stdout)
    assert len(numbers) == 12, one.stdout[-3000:]
    assert SUMMARY.findall(two.stdout) == numbers, two.stdout[-3000:]
    print(f'test.py: two nodes {t2:.0f} s, one process {time.time() - t - t2:.0f} s: {numbers}')
