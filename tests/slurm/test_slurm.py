"""Launchers, requeue, kill and SIGUSR1 recovery on a real (one-node, CPU) Slurm cluster and
with torchrun. Training runs are the real configs shrunk by small wrapper configs (tiny images,
few iterations, two persistent loader workers) that also load tests/rank_probe.py. The real
configs at real sizes go through the Slurm chain in tests/slurm/test_rehearsal.py."""
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TESTS, run_tool, write_tiny_labeled
from slurm_jobs import (DET, DET_DEMO, DET_WRAPPER, MOCO_DEMO, MOCO_WRAPPER, SSL_DEMO,
                        assert_two_ranks_in_step, probes, reached_epoch, wait_for)

@pytest.fixture(scope='module')
def env(module_tmp, synthetic_root, moco_checkpoint):
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
    # the SSL recipe's BatchNorm, synchronized over gloo (custom_modules/models/sync_norm.py)
    ssl = det(SSL_DEMO, 'train_cfg = dict(max_epochs=2)\nval_dataloader = None\n'
              "model['backbone'] = dict(init_cfg=None)")
    moco = cfg_dir / 'mocov2' / f'{MOCO_DEMO}.py'
    moco.write_text(MOCO_WRAPPER.format(
        base=os.path.join(REPO, 'configs', 'mocov2', f'{MOCO_DEMO}.py'),
        root=os.path.join(synthetic_root, 'unlabeled')))
    proc_env = dict(os.environ, PYTHON=sys.executable,
                    PYTHONPATH=os.pathsep.join([REPO, TESTS, os.environ.get('PYTHONPATH', '')]))
    return dict(root=str(root), labeled=labeled, cfg_dir=str(cfg_dir), short=short, ddp=ddp, ssl=ssl,
                moco=str(moco), moco_ckpt=moco_checkpoint[0], env=proc_env)


def train_local(env, config, work_dir, *args, timeout=600):
    return run_tool('train.py', config, '--work-dir', work_dir, *args, env=env['env'],
                    cwd=env['root'], timeout=timeout)


@pytest.fixture(scope='module')
def reference_run(env):
    """The uninterrupted run the requeue and kill tests must reproduce."""
    work = os.path.join(env['root'], 'work_dirs', 'reference')
    # compared by its probe only: its one checkpoint is the last epoch's (saves change no state)
    r = train_local(env, env['short'], work, '--pretrained', env['moco_ckpt'],
                    '--cfg-options', 'default_hooks.checkpoint.interval=14')
    assert r.returncode == 0, r.stderr[-3000:]
    return probes(work)[0]


@pytest.mark.slow
@pytest.mark.parametrize('recipe', ['ddp', 'ssl'])
def test_dist_train_sh_two_cpu_processes(env, recipe):
    work = os.path.join(env['root'], 'work_dirs', f'dist_{recipe}')
    run_tool('dist_train.sh', env[recipe], '2', '--work-dir', work, env=env['env'],
             cwd=env['root'], check=True)
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


@pytest.mark.slow
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
    run_tool('slurm_train.sh', 'debug', f'srun-{which}', config, work, *args, env=e,
             cwd=env['root'], check=True)
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


@pytest.fixture(scope='module')
def interrupted_run(env, reference_run, request):
    """One run of the reference's schedule (14 epochs, 28 iterations) interrupted three ways in
    turn, each continued from what the one before left: SIGUSR1 to a local run after epoch 3
    (the time-limit path without Slurm), kill -9 of its local --resume after epoch 6, then
    train.sbatch (which resumes by itself) requeued by `scontrol requeue` after epoch 9. Every
    continuation has to be exact for the run to end with the reference's weights. Without
    Slurm the last part is a local --resume. Returns each part's output and the final probe."""
    work = os.path.join(env['root'], 'work_dirs', 'interrupted')
    cmd = [sys.executable, os.path.join(REPO, 'tools', 'train.py'), env['short'], '--work-dir',
           work, '--pretrained', env['moco_ckpt']]
    out = {}
    log = os.path.join(env['root'], 'sigusr1.log')  # a file, not a pipe nobody reads while waiting
    with open(log, 'w') as f:
        proc = subprocess.Popen(cmd, env=env['env'], cwd=env['root'], stdout=f,
                                stderr=subprocess.STDOUT)
    wait_for(reached_epoch(work, 3), lambda: proc.poll() is None, log=log)
    os.kill(proc.pid, signal.SIGUSR1)
    proc.wait(timeout=300)
    out['sigusr1'] = dict(returncode=proc.returncode, log=open(log).read(),
                          saved=sorted(f for f in os.listdir(work) if f.startswith('iter_')))
    # resumed without --pretrained: the checkpoint holds every weight
    proc = subprocess.Popen(cmd[:-2] + ['--resume'], env=env['env'], cwd=env['root'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(reached_epoch(work, 6), lambda: proc.poll() is None)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    out['kill9'] = dict(last=open(os.path.join(work, 'last_checkpoint')).read().strip(),
                        finished=os.path.exists(os.path.join(work, 'epoch_14.pth')))
    try:
        slurm = request.getfixturevalue('slurm')
    except pytest.skip.Exception as e:
        out['requeue'] = dict(skipped=str(e))
        r = train_local(env, env['short'], work, '--pretrained', env['moco_ckpt'], '--resume')
        assert r.returncode == 0, r.stderr[-3000:]
        out['kill9']['resumed'] = r.stdout + r.stderr
    else:
        e = dict(slurm.env, **{k: v for k, v in env['env'].items()
                               if k in ('PYTHON', 'PYTHONPATH')}, REPO=REPO)
        r = run_tool('sbatch', '--parsable', '-p', 'debug', '--gres=none', '--ntasks-per-node=1',
                     '--cpus-per-task=1', '--job-name=requeue',
                     os.path.join(REPO, 'tools', 'slurm', 'train.sbatch'), env['short'],
                     '--work-dir', work, '--pretrained', env['moco_ckpt'], env=e, cwd=env['root'])
        assert r.returncode == 0, r.stderr
        job = r.stdout.strip()
        wait_for(reached_epoch(work, 9), lambda: slurm.job_state(job) in ('PENDING', 'RUNNING'))
        slurm.requeue(job)
        state = slurm.wait(job, timeout=600)
        # a standalone sbatch logs to the submit folder (work_dirs/slurm/ may not exist yet)
        job_log = open(os.path.join(env['root'], f'slurm-requeue-{job}.out')).read()
        assert state == 'COMPLETED', job_log[-3000:]
        out['requeue'] = dict(log=job_log)
        out['kill9']['resumed'] = job_log.split('restart 1', 1)[0]
    out['probe'] = probes(work)[0]
    out['left'] = sorted(f for f in os.listdir(work) if f.startswith('iter_'))
    out['work'] = work
    return out


@pytest.mark.slow
@pytest.mark.slurm
def test_requeue_resumes_and_matches_uninterrupted_run(interrupted_run, reference_run):
    if 'skipped' in interrupted_run['requeue']:
        pytest.skip(interrupted_run['requeue']['skipped'])
    log = interrupted_run['requeue']['log']
    assert 'restart 1' in log and 'resumed epoch' in log
    # scontrol requeue sends SIGTERM (as preemption and scancel do): the run, two persistent
    # loader workers included, saved the iteration it was at and the restart continued it
    stop = re.search(r'stop requested \(SIGTERM[^)]*\): saved (\S+/iter_(\d+)\.pth)', log)
    assert stop and int(stop[2]) >= 18, log[-3000:]  # past epoch 9: 2 iterations an epoch
    assert f'resuming from {stop[1]} ' in log.split('restart 1', 1)[1], log[-3000:]
    p = interrupted_run['probe']
    assert p['iter'] == reference_run['iter'] == 28  # 14 epochs x 2 images, batch 1
    assert p['weights'] == reference_run['weights']


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted_run(env, interrupted_run, reference_run):
    killed = interrupted_run['kill9']
    work = interrupted_run['work']
    assert not killed['finished']
    # the resume continued from the last epoch checkpoint the killed run wrote
    last = re.fullmatch(r'(\S+/epoch_(\d+)\.pth)', killed['last'])
    assert last and int(last[2]) >= 6, killed['last']
    assert f'resuming from {last[1]} ' in killed['resumed'], killed['resumed'][-3000:]
    assert 'resumed epoch' in killed['resumed']
    p = interrupted_run['probe']
    assert p['iter'] == reference_run['iter'] and p['weights'] == reference_run['weights']
    # resubmitting a finished job says so and trains nothing more
    r = train_local(env, env['short'], work, '--pretrained', env['moco_ckpt'], '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'already finished its 14 epochs' in r.stdout
    assert probes(work)[0] == p


@pytest.mark.slow
def test_sigusr1_stops_inside_an_epoch_and_resume_matches_uninterrupted_run(interrupted_run,
                                                                          reference_run):
    """The time-limit path without Slurm: SIGUSR1 -> iter_N.pth after the current iteration,
    exit status 75; --resume continues inside that epoch (skipping the batches trained, RNG
    restored) and, with the later interruptions, ends with the reference's weights."""
    stopped = interrupted_run['sigusr1']
    out = stopped['log']
    assert stopped['returncode'] == 75, out[-3000:]
    assert len(stopped['saved']) == 1 and 'not a Slurm job' in out, out[-3000:]
    p = interrupted_run['probe']
    assert p['iter'] == reference_run['iter'] and p['weights'] == reference_run['weights']
    assert not interrupted_run['left']  # the iteration saves are superseded by epoch ones
