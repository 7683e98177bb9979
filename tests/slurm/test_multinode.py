"""The Slurm launchers across two nodes: a cluster of two emulated nodes (two slurmd on this
machine, one CPU each, see slurm_cluster.py) and one task per node, so every rank pair talks
across "nodes" (gloo over TCP, rendezvous at the first node's NodeAddr). The chain a user runs:
MoCo pretraining -> detection fine-tuning from its checkpoint -> a requeued sbatch job -> test.py,
with the configs shrunk as in test_slurm.py. Every Python process of a run loads a
sitecustomize.py whose audit hook records its rank, its node and the files it writes, so the tests
can tell which node each rank ran on and that rank 1 wrote nothing but its probe."""
import os
import re
import shutil
import time

import pytest
from helpers import REPO, run_tool
from slurm_jobs import (TWO_NODE_DET_EPOCHS as DET_EPOCHS, assert_two_ranks_in_step,
                        audit_records, cluster_env, probes, reached_epoch, slurm_train, wait_for)

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]

TRAIN_SH = os.path.join(REPO, 'tools', 'slurm_train.sh')


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
def test_mismatched_request_fails_at_once(two_node_env, slurm2, tmp_path, case):
    """A request that cannot run fails in seconds with one clear line, instead of waiting in
    the queue forever (Slurm's default EnforcePartLimits=NO) or at rendezvous."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    calls = tmp_path / 'srun.log'
    (bin_dir / 'srun').write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n'
                                  f'exec {shutil.which("srun")} "$@"\n')
    (bin_dir / 'srun').chmod(0o755)
    extra = dict(GPUS='2', GPUS_PER_NODE='1', CPUS_PER_TASK='1', GRES='')
    cmd = [TRAIN_SH, 'debug', 'mismatch', two_node_env['det'], str(tmp_path / 'work')]
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
    e = cluster_env(two_node_env, slurm2, **extra)
    e['PATH'] = f'{bin_dir}{os.pathsep}{e["PATH"]}'
    t = time.time()
    r = run_tool(*cmd, env=e, cwd=two_node_env['root'], timeout=120)
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
def moco_run(two_node_env, slurm2):
    work = os.path.join(two_node_env['work_dirs'], 'moco')
    audit = os.path.join(two_node_env['root'], 'audit', 'moco')
    slurm_train(two_node_env, slurm2, two_node_env['moco'], work, audit=audit)
    return work, audit


@pytest.fixture(scope='module')
def det_run(two_node_env, slurm2, moco_run):
    """Fine-tuning from the two-node MoCo checkpoint, uninterrupted: also the reference of the
    requeue test (same config, inputs and world size)."""
    work = os.path.join(two_node_env['work_dirs'], 'det')
    audit = os.path.join(two_node_env['root'], 'audit', 'det')
    moco_ckpt = os.path.join(moco_run[0], 'epoch_2.pth')
    slurm_train(two_node_env, slurm2, two_node_env['det'], work, '--pretrained', moco_ckpt, audit=audit)
    return work, audit, moco_ckpt


@pytest.mark.slow
def test_moco_across_two_nodes(moco_run):
    work, audit = moco_run
    p = assert_across_nodes(work, audit)
    # auto_scale_lr saw the world size: total batch 2 x 4 = 8 against base 4
    assert p[0]['lrs']['0'] == pytest.approx(0.06) == p[1]['lrs']['0']
    log = next(os.path.join(d, f) for d, _, fs in os.walk(work) for f in fs if f.endswith('.log'))
    assert 'current batch size is 8' in open(log).read()


@pytest.mark.slow
def test_detection_across_two_nodes(det_run):
    work, audit, _ = det_run
    p = assert_across_nodes(work, audit)
    assert p[0]['iter'] == DET_EPOCHS  # 2 images / (2 ranks x batch 1) per epoch


@pytest.mark.slow
def test_requeued_two_node_job_resumes_and_matches_uninterrupted_run(two_node_env, slurm2, det_run):
    reference = probes(det_run[0])[0]
    work = os.path.join(two_node_env['work_dirs'], 'requeue')
    t = time.time()
    r = run_tool('sbatch', '--parsable', '-p', 'debug', '--gres=none', '--nodes=2',
                 '--ntasks-per-node=1', '--cpus-per-task=1', '--job-name=mn-requeue',
                 os.path.join(REPO, 'tools', 'slurm', 'train.sbatch'), two_node_env['det'],
                 '--work-dir', work, '--pretrained', det_run[2],
                 env=cluster_env(two_node_env, slurm2, REPO=REPO), cwd=two_node_env['root'])
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    wait_for(reached_epoch(work, 2),
              lambda: slurm2.job_state(job) in ('PENDING', 'RUNNING'))
    slurm2.requeue(job)
    assert slurm2.wait(job, timeout=600) == 'COMPLETED'
    log = open(os.path.join(two_node_env['root'], f'slurm-mn-requeue-{job}.out')).read()
    assert 'restart 1 on tnode[1-2]' in log and 'resumed epoch' in log, log[-3000:]
    p = probes(work)
    assert sorted(p) == [0, 1] and p[0]['world_size'] == 2
    assert p[0]['iter'] == p[1]['iter'] == reference['iter']
    assert p[0]['weights'] == p[1]['weights'] == reference['weights']
    print(f'requeue: {time.time() - t:.0f} s')


SUMMARY = re.compile(r'^ Average (?:Precision|Recall) .*= +(-?\d+\.\d+)$', re.M)


@pytest.mark.slow
def test_test_py_across_two_nodes_matches_one_process(two_node_env, slurm2, det_run):
    ckpt = os.path.join(det_run[0], f'epoch_{DET_EPOCHS}.pth')
    # every box scored: an untrained detector's scores fall under the default threshold
    args = ['--data-root', two_node_env['labeled'], '--split', 'validation', '--batch-size', '1',
            '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0']
    t = time.time()
    e = cluster_env(two_node_env, slurm2, GPUS='2', GPUS_PER_NODE='1', CPUS_PER_TASK='1', GRES='')
    two = run_tool('slurm_test.sh', 'debug', 'mn-test', two_node_env['det'], ckpt, *args,
                   '--work-dir', os.path.join(two_node_env['work_dirs'], 'test2'), env=e,
                   cwd=two_node_env['root'], check=True)
    t2 = time.time() - t
    one = run_tool('test.py', two_node_env['det'], ckpt, *args, '--work-dir',
                   os.path.join(two_node_env['work_dirs'], 'test1'), env=two_node_env['env'],
                   cwd=two_node_env['root'], check=True)
    numbers = SUMMARY.findall(one.stdout)
    assert len(numbers) == 12, one.stdout[-3000:]
    assert SUMMARY.findall(two.stdout) == numbers, two.stdout[-3000:]
    print(f'test.py: two nodes {t2:.0f} s, one process {time.time() - t - t2:.0f} s: {numbers}')
