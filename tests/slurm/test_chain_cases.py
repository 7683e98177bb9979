"""The Slurm chain when a stage fails or a folder was trained before,
on the one-node test cluster: the real tools/slurm scripts over tests/slurm/test_slurm.py's wrapper
configs under the real configs' names (CONFIG_DIR), tiny generated data, a generated MoCo
checkpoint (MOCO=...) and short schedules (MOCO_EPOCHS, DET_EPOCHS). One chain serves the
requeue, MAX_RESTARTS and continuation tests in turn (module fixtures, each a step further)."""
import os
import re
import sys
import time

import pytest
from slurm_jobs import DET, DET_WRAPPER, MOCO_DEMO, MOCO_WRAPPER
from helpers import REPO, TESTS, run_tool, write_tiny_labeled


pytestmark = pytest.mark.slurm

SUBMIT = os.path.join(REPO, 'tools', 'slurm', 'submit_pipeline.sh')
MOCO = 'mocov2_resnet50_4xb32-coslr-200e_unlabeled224'
STAGES = ('s1-23e', 's2-27e', 's3-37e')
# s1 ends at epoch 1, s2 at 8 (14 iterations of 2 images: time to signal it twice), s3 at 9
DET_EPOCHS = '1 8 9'
PIPELINE_VARS = ('LABELED', 'UNLABELED', 'MOCO', 'PRETRAIN', 'RECIPE', 'PRETRAIN_GPUS',
                 'DET_GPUS', 'SBATCH_ARGS', 'MOCO_ARGS', 'DET_ARGS', 'TEST_ARGS', 'MOCO_EPOCHS',
                 'DET_EPOCHS', 'PYTHON', 'CONFIG_DIR', 'GRES', 'MAX_RESTARTS')


@pytest.fixture(scope='module')
def rig(module_tmp, slurm, synthetic_root, moco_checkpoint):
    """Configs under the names submit_pipeline.sh uses, tiny labeled data, a MoCo checkpoint,
    and the environment of a user's shell on the cluster (no pipeline variables)."""
    root = module_tmp('chain_cases')
    labeled = str(root / 'labeled')
    write_tiny_labeled(labeled)
    cfg_dir = root / 'configs'
    (cfg_dir / 'faster_rcnn').mkdir(parents=True)
    (cfg_dir / 'mocov2').mkdir()
    for stage in STAGES:
        name = f'{DET}-{stage}_labeled'
        # the real configs' save_best: the chain's test job evaluates the best checkpoint
        (cfg_dir / 'faster_rcnn' / f'{name}.py').write_text(DET_WRAPPER.format(
            base=os.path.join(REPO, 'configs', 'faster_rcnn', f'{name}.py'), root=labeled,
            cache=str(root / 'index-cache'), extra='default_hooks = dict(logger=dict(interval=1))'))
    moco_cfg = cfg_dir / 'mocov2' / f'{MOCO}.py'
    moco_cfg.write_text(MOCO_WRAPPER.format(
        base=os.path.join(REPO, 'configs', 'mocov2', MOCO_DEMO + '.py'),
        root=os.path.join(synthetic_root, 'unlabeled')))
    env = {k: v for k, v in slurm.env.items() if k not in PIPELINE_VARS}
    env['PYTHONPATH'] = os.pathsep.join([REPO, TESTS, os.environ.get('PYTHONPATH', '')])
    pipeline = dict(LABELED=labeled, CONFIG_DIR=str(cfg_dir), PYTHON=sys.executable, GRES='',
                    PRETRAIN_GPUS='1', DET_GPUS='1', SBATCH_ARGS='-p debug --cpus-per-task=1',
                    # a detector trained for a few iterations scores every box under 0.05
                    TEST_ARGS='--cfg-options model.test_cfg.rcnn.score_thr=0.0')
    return dict(root=root, slurm=slurm, env=env, pipeline=pipeline, moco_ckpt=moco_checkpoint[0],
                unlabeled=os.path.join(synthetic_root, 'unlabeled'))


def submit(rig, folder, **pipeline):
    os.makedirs(folder, exist_ok=True)
    return run_tool(SUBMIT, env=dict(rig['env'], **pipeline), cwd=folder, timeout=300)


def job_ids(stdout):
    """{'pretrain' / 'fine-tune s1-23e' / ... / 'test': job id} from submit_pipeline.sh's lines."""
    return {m[1]: m[2] for m in re.finditer(r'^(.*?): job (\d+)', stdout, re.M)}


def log_of(folder, name, job):
    path = os.path.join(folder, 'work_dirs', 'slurm', f'{name}-{job}.out')
    return open(path).read() if os.path.exists(path) else ''


def job_field(slurm, job, field):
    out = slurm.run('scontrol', 'show', 'job', job, check=False).stdout
    m = re.search(rf'\b{field}=(\S+)', out)
    return m[1] if m else ''


def wait_until(done, what, timeout=300, alive=lambda: True, tail=lambda: ''):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if done():
            return
        assert alive(), f'gave up waiting for {what}\n{tail()[-3000:]}'
        time.sleep(0.2)
    raise TimeoutError(f'{what}\n{tail()[-3000:]}')


def last_checkpoint(work_dir):
    try:
        return os.path.basename(open(os.path.join(work_dir, 'last_checkpoint')).read().strip())
    except FileNotFoundError:
        return ''


def our_jobs(slurm, folder):
    """Ids of the jobs in the queue that were submitted from ``folder``."""
    out = slurm.run('squeue', '-h', '-o', '%i %Z', check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1:] == [str(folder)]]


# --- a rehearsal's work folder is refused when the real pipeline is submitted ---------

@pytest.mark.slow
def test_rehearsal_pretraining_folder_is_refused_at_submit_time(rig):
    slurm, folder = rig['slurm'], rig['root'] / 'rehearsed'
    r = submit(rig, folder, **rig['pipeline'], UNLABELED=rig['unlabeled'], MOCO_EPOCHS='1 2')
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = job_ids(r.stdout)
    for name, job in jobs.items():  # the rehearsal's pretraining is all this test needs
        if name != 'pretrain':
            slurm.run('scancel', job)
    assert slurm.wait(jobs['pretrain'], timeout=300) == 'COMPLETED', \
        log_of(folder, 'mocov2', jobs['pretrain'])[-3000:]
    # the real pipeline in the same folder: its pretraining would stop in the queue hours later
    r = submit(rig, folder, **rig['pipeline'], UNLABELED=rig['unlabeled'])
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr
    for words in (f'work_dirs/{MOCO}', "param_scheduler.0.T_max: 2 -> 200",
                  'another folder', 'move', '--allow-input-change'):
        assert words in lines[0], (words, lines[0])
    assert not r.stdout and our_jobs(slurm, folder) == []


# --- one chain through a requeue, MAX_RESTARTS, its continuation, then the real pipeline -------

@pytest.fixture(scope='module')
def chain(rig):
    """s1 -> s2 -> s3 -> test with MAX_RESTARTS=1, submitted; s1 done and s2 training."""
    folder = rig['root'] / 'chain'
    pipeline = dict(rig['pipeline'], MOCO=rig['moco_ckpt'], DET_EPOCHS=DET_EPOCHS,
                    MAX_RESTARTS='1')
    r = submit(rig, folder, **pipeline)
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = job_ids(r.stdout)
    assert list(jobs) == [f'fine-tune {s}' for s in STAGES] + ['test'], r.stdout
    names = dict(zip(jobs.values(), ('det-s1', 'det-s2', 'det-s3', 'det-test')))
    ids = list(jobs.values())
    slurm = rig['slurm']
    assert slurm.wait(ids[0], timeout=300) == 'COMPLETED', log_of(folder, 'det-s1', ids[0])[-3000:]
    return dict(folder=folder, pipeline=pipeline, ids=ids, names=names,
                s2_dir=os.path.join(folder, 'work_dirs', f'{DET}-s2-27e_labeled'))


def _signal_s2_in_training(rig, chain, after):
    """SIGUSR1 to s2's training (as Slurm's --signal=USR1@... sends it) once ``after()``."""
    slurm, s2 = rig['slurm'], chain['ids'][1]
    wait_until(after, f'{after.__name__} (s2, job {s2})',
               alive=lambda: slurm.job_state(s2) in ('PENDING', 'RUNNING'),
               tail=lambda: log_of(chain['folder'], 'det-s2', s2))
    slurm.run('scancel', '--signal=USR1', s2)


@pytest.fixture(scope='module')
def requeued(rig, chain):
    """s2 stopped by its time-limit signal, requeued itself and waits; what its dependants did
    meanwhile; then s2 started again."""
    slurm, s2, folder = rig['slurm'], chain['ids'][1], chain['folder']

    def saved_an_epoch():
        name = last_checkpoint(chain['s2_dir'])
        return name.startswith('epoch_') and int(name[6:-4]) >= 2
    _signal_s2_in_training(rig, chain, saved_an_epoch)
    wait_until(lambda: 'requeued job' in log_of(folder, 'det-s2', s2)
               and slurm.job_state(s2) == 'PENDING', f'job {s2} requeued and pending',
               tail=lambda: log_of(folder, 'det-s2', s2))
    time.sleep(3)  # a scheduler pass: a dependant that gave up would say so by now
    waiting = {job: (slurm.job_state(job), job_field(slurm, job, 'Reason'))
               for job in chain['ids'][2:]}
    log = log_of(folder, 'det-s2', s2)
    wait_until(lambda: 'restart 1 ' in log_of(folder, 'det-s2', s2), f'job {s2} restarted')
    return dict(waiting=waiting, log=log)


@pytest.mark.slow
def test_afterok_dependants_wait_through_a_self_requeue(chain, requeued):
    for job, (state, reason) in requeued['waiting'].items():
        assert (state, reason) == ('PENDING', 'Dependency'), (chain['names'][job], state, reason)
    # a requeue is no failure: train.sbatch says nothing (Slurm's own lines aside)
    assert 'error: job' not in requeued['log'], requeued['log'][-3000:]


@pytest.fixture(scope='module')
def exhausted(rig, chain, requeued):
    """The restarted s2 signalled again, with no restart left (MAX_RESTARTS=1): it fails."""
    slurm, s2, folder = rig['slurm'], chain['ids'][1], chain['folder']

    def resumed_and_saved_an_epoch():
        log = log_of(folder, 'det-s2', s2)
        return 'restart 1 ' in log and 'resuming from' in log.split('restart 1 ', 1)[1] \
            and last_checkpoint(chain['s2_dir']).startswith('epoch_')
    _signal_s2_in_training(rig, chain, resumed_and_saved_an_epoch)
    state = slurm.wait(s2, timeout=300)
    deps = chain['ids'][2:]
    # the scheduler marks a dependency that can no longer be met on its next pass
    wait_until(lambda: job_field(slurm, deps[0], 'Reason') != 'Dependency',
               f'job {deps[0]} to notice that job {s2} failed', timeout=60)
    return dict(state=state, exit=job_field(slurm, s2, 'ExitCode'),
                log=log_of(folder, 'det-s2', s2),
                dependants={job: (slurm.job_state(job), job_field(slurm, job, 'Reason'))
                            for job in deps})


@pytest.mark.slow
def test_max_restarts_exhausted_fails_the_stage_and_says_what_to_run(chain, exhausted):
    log = exhausted['log']
    assert exhausted['state'] == 'FAILED' and exhausted['exit'] == '75:0', log[-3000:]
    assert 'restarted 1 times (MAX_RESTARTS=1): not requeued' in log, log[-3000:]
    # the job's last words: why, what the dependants do, and the one command that continues
    error = [line for line in log.splitlines() if line.startswith('error: ')]
    assert error and 'exit status 75' in error[-1] and 'MAX_RESTARTS=1' in error[-1], log[-3000:]
    assert 'never start' in error[-1]
    assert log.rstrip().splitlines()[-1].startswith(f'cd {chain["folder"]} && '), log[-3000:]
    s3, test = chain['ids'][2:]
    # s3 waits for s2 and can never start; the test waits for s3
    assert exhausted['dependants'] == {s3: ('PENDING', 'DependencyNeverSatisfied'),
                                       test: ('PENDING', 'Dependency')}


@pytest.fixture(scope='module')
def continued(rig, chain, exhausted):
    """The command the failed stage printed, run as a user would paste it."""
    lines = exhausted['log'].rstrip().splitlines()
    cmd = lines[-1] if lines and 'submit_pipeline.sh' in lines[-1] else None
    assert cmd, f'no command to continue the chain at the end of the failed stage\'s log:\n' \
        f'{exhausted["log"][-3000:]}'
    r = run_tool('bash', '-c', cmd, env=rig['env'], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = job_ids(r.stdout)
    slurm, folder = rig['slurm'], chain['folder']
    old = {job: slurm.job_state(job) for job in chain['ids'][2:]}
    names = ['det-s2', 'det-s3', 'det-test'][-len(jobs):]
    states = {name: slurm.wait(job, timeout=600) for name, job in zip(names, jobs.values())}
    return dict(out=r.stdout, jobs=jobs, names=dict(zip(names, jobs.values())), old=old,
                states=states)


@pytest.mark.slow
def test_a_failed_stage_continues_with_the_one_command_it_printed(chain, continued):
    folder = chain['folder']
    # s1 had finished: not submitted again; s2 continues from its saved iteration
    assert list(continued['jobs']) == ['fine-tune s2-27e', 'fine-tune s3-37e', 'test'], \
        continued['out']
    assert 'fine-tune s1-23e: finished' in continued['out']
    # the stale dependants of the failed run are replaced, not left pending forever
    assert continued['old'] == dict.fromkeys(chain['ids'][2:], 'CANCELLED'), continued['out']
    for name, job in continued['names'].items():
        assert continued['states'][name] == 'COMPLETED', (name, log_of(folder, name, job)[-3000:])
    s2_log = log_of(folder, 'det-s2', continued['names']['det-s2'])
    assert re.search(r'resuming from \S+/iter_\d+\.pth', s2_log), s2_log[-3000:]
    assert log_of(folder, 'det-test', continued['names']['det-test']).count(' Average ') == 12


@pytest.mark.slow
def test_rehearsal_fine_tuning_folders_are_refused_at_submit_time(rig, chain, continued):
    """The chain above was a rehearsal (DET_EPOCHS); the real schedule in the same folder."""
    pipeline = {k: v for k, v in chain['pipeline'].items() if k != 'DET_EPOCHS'}
    r = submit(rig, chain['folder'], **pipeline)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr
    for words in (f'work_dirs/{DET}-s1-23e_labeled', "param_scheduler.1.milestones: '[1, 8]' -> "
                  "'[23, 27]'", 'another folder', 'move'):
        assert words in lines[0], (words, lines[0])
    assert not r.stdout and our_jobs(rig['slurm'], chain['folder']) == []


# --- preemption with a grace time, scancel, a job Slurm holds (a cluster of their own) --------

# Stands in for tools/train.py (and tools/test.py) under the sbatch scripts: a first start runs
# until SIGTERM, then exits as TimeLimitHook does after saving (143); a restart finishes (0).
TRAINING = '''#!/usr/bin/env bash
echo "training, restart ${SLURM_RESTART_COUNT:-0}: $*"
((${SLURM_RESTART_COUNT:-0} == 0)) || exit 0
trap 'echo "stop requested (SIGTERM): saved"; exit 143' TERM
touch "$(dirname "$0")/started-$SLURM_JOB_ID"
while :; do sleep 0.1; done
'''


@pytest.fixture(scope='module')
def preempt_rig(module_tmp, slurm_preempt):
    root = module_tmp('preempt')
    training = root / 'training'
    training.write_text(TRAINING)
    training.chmod(0o755)
    env = {k: v for k, v in slurm_preempt.env.items() if k not in PIPELINE_VARS}
    return dict(root=root, slurm=slurm_preempt, env=dict(env, PYTHON=str(training), REPO=REPO))


def _train_job(rig, name, script='train.sbatch'):
    r = run_tool('sbatch', '--parsable', '-p', 'low', '--gres=none', '--ntasks-per-node=1',
                 '--cpus-per-task=2', f'--job-name={name}',
                 os.path.join(REPO, 'tools', 'slurm', script), 'cfg.py', '--work-dir', 'w',
                 env=rig['env'], cwd=rig['root'])
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    log = rig['root'] / f'slurm-{name}-{job}.out'
    wait_until(lambda: (rig['root'] / f'started-{job}').exists(), f'job {job} training',
               timeout=120, alive=lambda: rig['slurm'].job_state(job) in ('PENDING', 'RUNNING'),
               tail=lambda: log.read_text() if log.exists() else '')
    return job, log


@pytest.fixture(scope='module')
def preempted(preempt_rig):
    """A train.sbatch and a test.sbatch job (two CPUs each), each with an afterok dependant,
    preempted together by one job of all the cluster's CPUs in the higher partition; waited for
    once, since slurmctld ends a grace time only at its 30-second timer."""
    slurm, env, root = preempt_rig['slurm'], preempt_rig['env'], preempt_rig['root']
    jobs = {}
    for script in ('train.sbatch', 'test.sbatch'):
        name = f'preempted-{script.split(".")[0]}'
        job, log = _train_job(preempt_rig, name, script)
        r = run_tool('sbatch', '--parsable', '-p', 'low', '--cpus-per-task=1', '--job-name=after',
                     f'--dependency=afterok:{job}', '--wrap', 'true', env=env, cwd=root)
        assert r.returncode == 0, r.stderr
        jobs[script] = dict(job=job, name=name, log=log, after=r.stdout.strip())
    r = run_tool('sbatch', '--parsable', '-p', 'high', f'--cpus-per-task={slurm.cpus}',
                 '--job-name=urgent',
                 '--wrap', 'true', env=env, cwd=root)
    assert r.returncode == 0, r.stderr
    for j in jobs.values():
        j['state'] = slurm.wait(j['job'], timeout=240)
    for j in jobs.values():
        # a dependant of a failed job never starts: its state, not a timeout, goes to the test
        j['after_state'] = (slurm.wait(j['after'], timeout=120) if j['state'] == 'COMPLETED'
                            else slurm.job_state(j['after']))
    return jobs


@pytest.mark.slow
@pytest.mark.parametrize('script', ['train.sbatch', 'test.sbatch'])
def test_preemption_with_a_grace_time_requeues_the_job(preempted, script):
    """During the grace time Slurm signals the training but not the batch script, and requeues
    the job only if it still runs when the grace time ends: the batch script says so and waits,
    so the job is requeued rather than ended FAILED, and its afterok dependant runs after it."""
    j = preempted[script]
    job, out = j['job'], j['log'].read_text()
    assert not [s for s in out.splitlines() if s.startswith('error: ')], out[-3000:]
    assert j['state'] == 'COMPLETED' and 'training, restart 1:' in out, (j['state'], out[-3000:])
    [line] = [s for s in out.splitlines() if s.startswith(f'job {job} ({j["name"]}) ')]
    assert 'is being preempted' in line and 'Slurm requeues the job' in line, out
    # afterok waited through the requeue
    assert j['after_state'] == 'COMPLETED'


def test_scancel_says_the_job_was_cancelled_and_what_continues_it(preempt_rig):
    """scancel signals the batch script too, which died at once and said nothing: the jobs
    waiting for the job never start, and nothing said how to continue."""
    slurm = preempt_rig['slurm']
    job, log = _train_job(preempt_rig, 'cancelled')
    slurm.run('scancel', job)
    assert slurm.wait(job, timeout=120) == 'CANCELLED'
    wait_until(lambda: 'sbatch ...' in log.read_text(), f'job {job} to say what continues it',
               timeout=60, tail=log.read_text)
    error = [s for s in log.read_text().splitlines() if s.startswith('error: ')]
    assert len(error) == 1 and error[0].startswith(f'error: job {job} (cancelled) was cancelled'), \
        log.read_text()
    assert 'failed' not in error[0] and 'never start' in error[0]
    assert log.read_text().rstrip().splitlines()[-1] == (
        f'sbatch ... {REPO}/tools/slurm/train.sbatch cfg.py --work-dir w')


@pytest.mark.slow
def test_a_chain_job_held_by_slurm_is_named_with_the_command_that_releases_it(preempt_rig,
                                                                                 module_tmp):
    """A job whose launch fails (a prolog error, a node that fails at launch; or more
    requeues through completion than MaxBatchRequeue) is held by Slurm: the chain waited
    without a word, and submitting it again said only "still queued or running"."""
    slurm, folder = preempt_rig['slurm'], preempt_rig['root'] / 'held'
    labeled = str(module_tmp('held-labeled'))
    write_tiny_labeled(labeled)
    moco = preempt_rig['root'] / 'moco.pth'
    moco.write_bytes(b'')
    pipeline = dict(LABELED=labeled, MOCO=str(moco), PYTHON=sys.executable, GRES='',
                    DET_GPUS='1', SBATCH_ARGS='-p low --cpus-per-task=1')
    env = dict(preempt_rig['env'], PYTHONPATH=os.pathsep.join([REPO, TESTS]))
    del env['PYTHON']
    os.makedirs(folder)
    open(slurm.fail_launch, 'w').close()
    jobs = []
    try:
        r = run_tool(SUBMIT, env=dict(env, **pipeline), cwd=folder, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        jobs = list(job_ids(r.stdout).values())
        wait_until(lambda: 'held' in job_field(slurm, jobs[0], 'Reason'),
                   f'job {jobs[0]} held after its launch failed', timeout=60)
        r = run_tool(SUBMIT, env=dict(env, **pipeline), cwd=folder, timeout=300)
    finally:
        os.remove(slurm.fail_launch)
        slurm.run('scancel', *jobs, check=False)
        slurm.run('scontrol', 'update', f'NodeName={slurm.nodes[0]}', 'State=RESUME', check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: job {jobs[0]} (det-s1) is held'), \
        r.stderr
    assert 'launch failed requeued held' in lines[0]
    assert f'scontrol release {jobs[0]}' in lines[0], lines[0]
