"""The shell launchers' argument handling and submit_pipeline.sh's checks before submitting.

No Slurm cluster: a fake `sbatch` (and `srun`) first on PATH records its arguments, so a test can
tell that a bad input stopped the pipeline before ANY job was queued (a queued job with a bad input
fails hours later, after waiting in the queue)."""
import json
import os
import shutil
import stat
import sys

import pytest
from helpers import REPO, counted_python, run_tool

SUBMIT = os.path.join(REPO, 'tools', 'slurm', 'submit_pipeline.sh')
# launcher -> number of required arguments (from each file's header comment)
LAUNCHERS = {'slurm_train.sh': 3, 'slurm_test.sh': 4, 'dist_train.sh': 2, 'dist_test.sh': 3}
# the environment variables the scripts read: none may leak in from the caller's shell
SCRIPT_ENV = ('PYTHON', 'MOCO', 'LABELED', 'UNLABELED', 'SBATCH_ARGS', 'GRES', 'GPUS',
              'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS', 'CONFIG_DIR', 'MOCO_EPOCHS',
              'DET_EPOCHS', 'DET_ARGS', 'MOCO_ARGS', 'TEST_ARGS', 'PORT', 'NNODES', 'NODE_RANK',
              'MASTER_ADDR', 'PRETRAIN_GPUS', 'DET_GPUS', 'PRETRAIN', 'RECIPE')


def _script(path, body):
    with open(path, 'w') as f:
        f.write('#!/usr/bin/env bash\n' + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def rig(tmp_path):
    """A fake sbatch / srun on PATH, each appending one line per call to calls.log (sbatch also
    records the PYTHON its job would see, and prints a job id as `sbatch --parsable` does);
    ``python``: a PYTHON that records its start there too, for the checks that need none."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    log = tmp_path / 'calls.log'
    _script(bin_dir / 'sbatch', f'echo "sbatch PYTHON=${{PYTHON:-}} $*" >> {log}\n'
                                f'echo $((1000 + $(wc -l < {log})))\n')
    _script(bin_dir / 'srun', f'echo "srun $*" >> {log}\n')
    python = _script(bin_dir / 'recorded-python', f'echo "python $*" >> {log}\nexit 1\n')
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_ENV}
    env['PATH'] = f'{bin_dir}{os.pathsep}{env["PATH"]}'
    work = tmp_path / 'submit'
    work.mkdir()

    def calls():
        return log.read_text().splitlines() if log.exists() else []

    return dict(env=env, cwd=str(work), tmp=tmp_path, calls=calls, bin=bin_dir,
                python=python)


def run(rig, cmd, **env):
    return run_tool(*cmd, env=dict(rig['env'], **env), cwd=rig['cwd'], timeout=120)


@pytest.fixture(scope='module')
def data(module_tmp):
    """A tiny generated data set in the course layout."""
    from make_synthetic_data import make_dataset
    out = module_tmp('launch-data')
    make_dataset(str(out), seed=0, num_unlabeled=4, num_train=2, num_val=2)
    return dict(labeled=str(out / 'labeled'), unlabeled=str(out / 'unlabeled'))


# --- launchers -------------------------------------------------------------------------------

@pytest.mark.parametrize('name', sorted(LAUNCHERS))
@pytest.mark.parametrize('too_few', ['none', 'one short'])
def test_launcher_too_few_args_prints_one_usage_line(rig, name, too_few):
    # was: `line 8: $1: unbound variable` (set -u), exit 1
    args = [] if too_few == 'none' else ['a'] * (LAUNCHERS[name] - 1)
    r = run(rig, [os.path.join(REPO, 'tools', name), *args])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'usage: tools/{name} '), r.stderr
    assert 'unbound variable' not in r.stderr and not rig['calls']()  # nothing launched


@pytest.mark.parametrize('name', sorted(LAUNCHERS))
@pytest.mark.parametrize('flag', ['-h', '--help'])
def test_launcher_help_prints_the_header_usage(rig, name, flag):
    r = run(rig, [os.path.join(REPO, 'tools', name), flag])
    assert r.returncode == 0, r.stderr
    with open(os.path.join(REPO, 'tools', name)) as f:
        header = []
        for line in f.read().splitlines()[1:]:
            if not line.startswith('#'):
                break
            header.append(line[2:])
    assert r.stdout == 'usage: ' + '\n'.join(header) + '\n'
    # the one-line usage of a bad call is the header's, shortened
    usage = run(rig, [os.path.join(REPO, 'tools', name)]).stderr.split()
    assert r.stdout.startswith(' '.join(usage[:2 + LAUNCHERS[name]]))
    assert not rig['calls']()


def test_slurm_launchers_still_pass_everything_to_srun(rig):
    # the argument check must not change what a valid call runs (work dir, extra args, env)
    py = _script(rig['bin'] / 'py', 'true\n')
    r = run(rig, [os.path.join(REPO, 'tools', 'slurm_train.sh'), 'part', 'job', 'cfg.py', 'wd',
                  '--x', '1'], GPUS='2', GRES='', PYTHON=py)
    assert r.returncode == 0, r.stderr
    r = run(rig, [os.path.join(REPO, 'tools', 'slurm_test.sh'), 'part', 'ev', 'cfg.py', 'c.pth',
                  '--split', 'validation'], PYTHON=py)
    assert r.returncode == 0, r.stderr
    train, test = rig['calls']()
    assert train.startswith('srun -p part --job-name=job --ntasks=2 --ntasks-per-node=2')
    assert f'{py} -u {REPO}/tools/train.py cfg.py --work-dir wd --launcher slurm --x 1' in train
    assert '--gres=gpu:1' in test
    assert f'{REPO}/tools/test.py cfg.py c.pth --launcher slurm --split validation' in test


def test_dist_launchers_still_pass_everything_to_torchrun(rig):
    log = rig['tmp'] / 'py.log'
    py = _script(rig['bin'] / 'py', f'echo "$*" >> {log}\n')
    assert run(rig, [os.path.join(REPO, 'tools', 'dist_train.sh'), 'cfg.py', '2', '--x'],
               PYTHON=py, PORT='29999').returncode == 0
    assert run(rig, [os.path.join(REPO, 'tools', 'dist_test.sh'), 'cfg.py', 'c.pth', '1', '--y'],
               PYTHON=py, PORT='29999').returncode == 0
    train, test = log.read_text().splitlines()
    assert train.startswith('-m torch.distributed.run --nnodes=1 --node_rank=0')
    assert train.endswith(f'--nproc_per_node=2 --master_port=29999 {REPO}/tools/train.py cfg.py '
                          '--launcher pytorch --x')
    assert test.endswith(f'{REPO}/tools/test.py cfg.py c.pth --launcher pytorch --y')


@pytest.mark.parametrize('name', ['train.sbatch', 'test.sbatch'])
def test_sbatch_scripts_find_the_repository_and_its_python(rig, name):
    """sbatch runs a copy of the script: it finds the repository from scontrol's Command= (or
    REPO), and runs PYTHON, else the repository's .venv python, else python (job_python.sh)."""
    venv_python = os.path.join(REPO, '.venv', 'bin', 'python')
    if not os.access(venv_python, os.X_OK):
        pytest.skip('no .venv in the repository (make setup)')
    copy = rig['tmp'] / 'spool' / 'slurm_script'
    copy.parent.mkdir()
    shutil.copy(os.path.join(REPO, 'tools', 'slurm', name), copy)
    _script(rig['bin'] / 'scontrol', f'echo "   Command={REPO}/tools/slurm/{name} cfg.py"\n')
    no_venv = rig['tmp'] / 'other-checkout'  # a repository without .venv
    shutil.copytree(os.path.join(REPO, 'tools', 'slurm'), no_venv / 'tools' / 'slurm')
    rig['env'].pop('REPO', None)
    job = dict(SLURM_JOB_ID='1001', SLURM_JOB_NODELIST='node1', SLURM_SUBMIT_DIR=rig['cwd'])
    for extra in (dict(PYTHON='/opt/env/bin/python'), {}, dict(REPO=str(no_venv))):
        r = run(rig, ['bash', str(copy), 'cfg.py', 'x.pth'], **job, **extra)
        assert r.returncode == 0, r.stderr
    tool = f'tools/{name.split(".")[0]}.py'
    # srun --kill-on-bad-exit=1 --cpus-per-task=1 PYTHON -u TOOL ...
    assert [' '.join(c.split()[3:6]) for c in rig['calls']()] == [
        f'/opt/env/bin/python -u {REPO}/{tool}', f'{venv_python} -u {REPO}/{tool}',
        f'python -u {no_venv}/{tool}']


@pytest.mark.parametrize('explicit', [['--resume', '/w/epoch_12.pth'],
                                      ['--resume=/w/epoch_12.pth']])
def test_a_failed_job_prints_a_continue_command_without_its_rollback(rig, explicit):
    """train.sbatch's line to submit a failed job again repeated its --resume PATH: the new job
    rolled back to PATH again, losing every epoch trained since."""
    _script(rig['bin'] / 'srun', 'exit 1\n')  # the training failed
    _script(rig['bin'] / 'scontrol', 'true\n')  # not requeued
    rig['env'].pop('PIPELINE_RESUBMIT', None)
    r = run(rig, ['bash', os.path.join(REPO, 'tools', 'slurm', 'train.sbatch'), 'cfg.py',
                  '--work-dir', 'w d', *explicit, '--amp'], REPO=REPO, PYTHON='/bin/true',
            SLURM_JOB_ID='1001', SLURM_JOB_NODELIST='node1', SLURM_JOB_NAME='train',
            SLURM_SUBMIT_DIR=rig['cwd'])
    assert r.returncode == 1, r.stderr
    sbatch = os.path.join(REPO, 'tools', 'slurm', 'train.sbatch')
    last = r.stderr.splitlines()[-1].strip()
    assert last == f'sbatch ... {sbatch} cfg.py --work-dir w\\ d --amp', r.stderr


# --- submit_pipeline.sh checks -----------------------------------------------------------------

def assert_refused(rig, r, *words):
    """Exit 2, one `error:` line on stderr naming the problem, and no job submitted."""
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert rig['calls']() == [], 'sbatch (or a recorded PYTHON) was called before the inputs ' \
        'were checked'
    assert not r.stdout


def test_missing_labeled_folder(rig, data):
    missing = str(rig['tmp'] / 'no-such-labeled')
    r = run(rig, [SUBMIT], LABELED=missing, UNLABELED=data['unlabeled'])
    assert_refused(rig, r, f'LABELED={missing}', 'not a folder')
    assert not os.path.exists(os.path.join(rig['cwd'], 'work_dirs'))  # nothing created either


def test_labeled_unset(rig, data):
    assert_refused(rig, run(rig, [SUBMIT], UNLABELED=data['unlabeled']), 'set LABELED')


def test_labeled_without_validation(rig, data):
    labeled = rig['tmp'] / 'only-training'
    shutil.copytree(os.path.join(data['labeled'], 'training'), labeled / 'training')
    r = run(rig, [SUBMIT], LABELED=str(labeled), UNLABELED=data['unlabeled'])
    assert_refused(rig, r, f'{labeled}/validation: folder does not exist')


def test_labeled_with_a_broken_label_file(rig, data):
    # the layout is right but the files are not: check_dataset.py --quick reads a sample
    labeled = rig['tmp'] / 'broken'
    shutil.copytree(data['labeled'], labeled)
    bad = labeled / 'validation' / 'labels' / '4.yml'
    bad.write_text('bboxes: [[1, 2, 3]]\nlabels: [dog]\n')
    r = run(rig, [SUBMIT], LABELED=str(labeled), UNLABELED=data['unlabeled'])
    assert_refused(rig, r, str(bad), 'malformed box', 'check_dataset.py')


@pytest.fixture
def coco_labeled(rig, data):
    """The tiny labeled set converted to COCO (tools/dataset_converters/course_to_coco.py)."""
    from dataset_converters.course_to_coco import convert
    convert(data['labeled'], str(rig['tmp'] / 'coco'))
    return rig['tmp'] / 'coco'


def test_coco_labeled_folder_is_submitted(rig, data, coco_labeled):
    r = run(rig, [SUBMIT], LABELED=str(coco_labeled), UNLABELED=data['unlabeled'],
            PYTHON=sys.executable)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = rig['calls']()
    assert len(calls) == 5 and all(f'--data-root {coco_labeled}' in c for c in calls[1:]), calls


@pytest.mark.slow
@pytest.mark.parametrize('reason', ['JobHoldMaxRequeue',  # Slurm 22.05
                                    'launch failure limit exceeded requeued held'])  # 23.02+
def test_a_chain_job_held_after_repeated_requeues_is_named_with_its_release(rig, data, reason):
    """Requeues through job completion (launch failures, a node rebooted under the job) past
    MaxBatchRequeue hold the job, and the chain behind it waits for ever; submitting again said
    only "still queued or running". tests/slurm/test_chain_cases.py holds a job on a cluster;
    this is the state the limit leaves (MaxBatchRequeue is no setting of Slurm 22.05)."""
    _script(rig['bin'] / 'squeue',
            f'echo "2001|det-s2|PENDING|{reason}|(null)|{rig["cwd"]}"\n'
            f'echo "2002|det-s3|PENDING|Dependency|afterok:2001(unfulfilled)|{rig["cwd"]}"\n')
    moco = rig['tmp'] / 'moco.pth'
    moco.write_bytes(b'x')
    r = run(rig, [SUBMIT], LABELED=data['labeled'], MOCO=str(moco), PYTHON=sys.executable)
    assert_refused(rig, r, f'job 2001 (det-s2) is held ({reason})', 'scontrol release 2001;',
                   'scancel 2001 2002')


def test_coco_labeled_folder_without_a_split_file(rig, data, coco_labeled):
    (coco_labeled / 'annotations' / 'instances_validation.json').unlink()
    r = run(rig, [SUBMIT], LABELED=str(coco_labeled), UNLABELED=data['unlabeled'])
    assert_refused(rig, r, f'LABELED={coco_labeled}', 'annotations/instances_validation.json',
                   'DET_ARGS="--cfg-options train_dataloader.dataset.split=NAME')


@pytest.mark.slow
def test_coco_splits_named_through_det_args_are_submitted(rig, data, coco_labeled):
    """COCO splits named as COCO names them (train2017, val2017): refused under the configs'
    split names, checked under the names DET_ARGS gives (a missing one refused by its name), and
    submitted with them. (The refusal's wording:
    tests/data/test_coco_data.py::test_slurm_chain_check_follows_the_split_names.)"""
    for old, new in (('training', 'train2017'), ('validation', 'val2017')):
        (coco_labeled / old).rename(coco_labeled / new)
        (coco_labeled / 'annotations' / f'instances_{old}.json').rename(
            coco_labeled / 'annotations' / f'instances_{new}.json')
    det_args = ('--cfg-options train_dataloader.dataset.split=train2017 '
                'val_dataloader.dataset.split=val2017')
    r = run(rig, [SUBMIT], LABELED=str(coco_labeled), UNLABELED=data['unlabeled'],
            PYTHON=sys.executable)
    assert_refused(rig, r, 'annotations/instances_training.json')
    val = coco_labeled / 'annotations' / 'instances_val2017.json'
    val.rename(val.with_suffix('.moved'))
    r = run(rig, [SUBMIT], LABELED=str(coco_labeled), UNLABELED=data['unlabeled'],
            PYTHON=sys.executable, DET_ARGS=det_args)
    assert_refused(rig, r, 'annotations/instances_val2017.json')
    val.with_suffix('.moved').rename(val)
    r = run(rig, [SUBMIT], LABELED=str(coco_labeled), UNLABELED=data['unlabeled'],
            PYTHON=sys.executable, DET_ARGS=det_args)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = rig['calls']()
    assert all('train_dataloader.dataset.split=train2017' in c for c in calls[1:4]), calls


def test_coco_labeled_folder_with_a_bad_entry(rig, data, coco_labeled):
    ann_file = coco_labeled / 'annotations' / 'instances_validation.json'
    ann = json.loads(ann_file.read_text())
    ann['annotations'][0]['category_id'] = 555
    ann_file.write_text(json.dumps(ann))
    r = run(rig, [SUBMIT], LABELED=str(coco_labeled), UNLABELED=data['unlabeled'])
    assert_refused(rig, r, 'category_id 555 is not in "categories"', 'check_dataset.py')


def test_unlabeled_without_images(rig, data):
    empty = rig['tmp'] / 'no-images'
    (empty / 'sub').mkdir(parents=True)
    (empty / 'sub' / 'a.gif').write_bytes(b'')
    (empty / 'notes.txt').write_bytes(b'')
    r = run(rig, [SUBMIT], LABELED=data['labeled'], UNLABELED=str(empty))
    assert_refused(rig, r, f'UNLABELED={empty}', 'no image file', '.jpeg')


def test_missing_moco_checkpoint(rig, data):
    missing = str(rig['tmp'] / 'moco.pth')
    r = run(rig, [SUBMIT], LABELED=data['labeled'], MOCO=missing)
    assert_refused(rig, r, f'MOCO={missing}')


def _python_without_mmdet(tmp):
    # what an environment without mmdet answers (exits 1 like `python -c 'import mmdet'`)
    return _script(tmp / 'python-no-mmdet', 'echo "ModuleNotFoundError: No module named '
                                            '\'mmdet\'" >&2; exit 1\n')


@pytest.mark.parametrize('which', ['fake', 'system'])
def test_python_without_mmdet(rig, data, which):
    if which == 'fake':
        py = _python_without_mmdet(rig['tmp'])
    else:
        py = '/usr/bin/python3'
        probe = run_tool(py, '-c', 'import mmdet') if os.path.exists(py) else None
        if probe is None or probe.returncode == 0:
            pytest.skip(f'{py} is missing or has mmdet')
    r = run(rig, [SUBMIT], LABELED=data['labeled'], UNLABELED=data['unlabeled'], PYTHON=py)
    assert_refused(rig, r, f'PYTHON={py}', 'mmdet')


def test_valid_inputs_submit_five_jobs_with_the_checked_python(rig, data):
    r = run(rig, [SUBMIT], LABELED=data['labeled'], UNLABELED=data['unlabeled'],
            PYTHON=sys.executable)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ''  # nothing printed for the checks that passed
    calls = rig['calls']()
    assert len(calls) == 5, calls
    # every job runs the interpreter that was checked
    assert all(c.startswith(f'sbatch PYTHON={sys.executable} ') for c in calls), calls
    assert [line.split(':')[0] for line in r.stdout.splitlines()] == [
        'pretrain', 'fine-tune s1-23e', 'fine-tune s2-27e', 'fine-tune s3-37e', 'test']


def test_valid_moco_checkpoint_skips_pretraining(rig, data):
    # no PYTHON: the repository's .venv, as train.sbatch would pick it, checked and exported
    venv_python = os.path.join(REPO, '.venv', 'bin', 'python')
    if not os.access(venv_python, os.X_OK):
        pytest.skip('no .venv in the repository (make setup)')
    moco = rig['tmp'] / 'moco.pth'
    moco.write_bytes(b'x')
    r = run(rig, [SUBMIT], LABELED=data['labeled'], MOCO=str(moco))
    assert r.returncode == 0, r.stdout + r.stderr
    calls = rig['calls']()
    assert len(calls) == 4 and f'--pretrained {moco}' in calls[0], calls
    assert all(c.startswith(f'sbatch PYTHON={venv_python} ') for c in calls), calls


@pytest.mark.slow
def test_densecl_and_the_ssl_recipe_submit_three_jobs(rig, data):
    r = run(rig, [SUBMIT], LABELED=data['labeled'], UNLABELED=data['unlabeled'],
            PYTHON=sys.executable, PRETRAIN='densecl', RECIPE='ssl')
    assert r.returncode == 0, r.stdout + r.stderr
    pre, det, test = rig['calls']()
    densecl = 'densecl_resnet50_4xb32-coslr-200e_unlabeled224'
    ssl = 'faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_2xb8-ms-36e_labeled'
    assert f'configs/densecl/{densecl}.py --data-root {data["unlabeled"]}' in pre
    assert '--job-name=densecl' in pre and '--dependency=afterok:1001' in det
    assert f'configs/faster_rcnn/{ssl}.py --data-root {data["labeled"]} --pretrained ' \
        f'work_dirs/{densecl}/keep_epoch_100.pth --amp' in det
    assert '--dependency=afterok:1002' in test and f'--best-of work_dirs/{ssl} ' in test
    assert [line.split(':')[0] for line in r.stdout.splitlines()] == [
        'pretrain', 'fine-tune ssl-36e', 'test']


@pytest.mark.slow
def test_mae_and_the_peer_vit_recipe_chain_four_stages_from_best_checkpoints(rig, data):
    r = run(rig, [SUBMIT], LABELED=data['labeled'], UNLABELED=data['unlabeled'],
            PYTHON=sys.executable, PRETRAIN='mae', RECIPE='peer-vit')
    assert r.returncode == 0, r.stdout + r.stderr
    calls = rig['calls']()
    assert [line.split(':')[0] for line in r.stdout.splitlines()] == [
        'pretrain', 'fine-tune vit-s1', 'fine-tune vit-s2', 'fine-tune vit-s3', 'fine-tune vit-s4',
        'test']
    pre, s1, *later, test = calls
    mae = 'mae_vit-base-p16_4xb64-amp-coslr-80e_unlabeled224'
    # stop at 80 of the 200-epoch schedule: the cosine after 20 warm-up epochs spans 180
    assert f'configs/mae/{mae}.py --data-root {data["unlabeled"]} --cfg-options ' \
        'train_cfg.max_epochs=80 param_scheduler.1.T_max=180 param_scheduler.1.end=200' in pre
    assert '--job-name=mae' in pre and '--ntasks-per-node=4' in pre
    vit = 'faster-rcnn_vit-b-mae-pre_sfp_1xb2'
    assert f'configs/vitdet/{vit}-s1-frozen-20e_labeled512.py --data-root {data["labeled"]} ' \
        f'--pretrained work_dirs/{mae}/keep_epoch_80.pth' in s1
    for k, (job, call) in enumerate(zip((s1, *later), later), start=2):
        # each stage after the one before; its config loads that stage's best checkpoint
        assert f'--dependency=afterok:{1000 + k}' in call and '--ntasks-per-node=1' in call
        assert f'configs/vitdet/{vit}-s{k}-20e_labeled512.py --data-root' in call
        assert '--pretrained' not in call
    dirs = [f'work_dirs/{vit}-s1-frozen-20e_labeled512'] + [
        f'work_dirs/{vit}-s{k}-20e_labeled512' for k in (2, 3, 4)]
    assert f'{vit}-s4-20e_labeled512.py --best-of {" ".join(dirs)} ' in test
    assert '--dependency=afterok:1005' in test


@pytest.mark.parametrize('recipe', ['seed', 'ssl'])
def test_semi_supervised_stage_follows_the_fine_tuning_from_its_best_checkpoint(rig, data, recipe):
    r = run(rig, [SUBMIT], LABELED=data['labeled'], UNLABELED=data['unlabeled'],
            PYTHON=sys.executable, RECIPE=recipe, SEMI='1',
            SEMI_ARGS='--cfg-options train_cfg.max_epochs=2')
    assert r.returncode == 0, r.stdout + r.stderr
    *earlier, semi, test = rig['calls']()
    if recipe == 'seed':
        folders = [f'work_dirs/faster-rcnn_r50-mocov2-pre_fpn_2xb2-{s}_labeled'
                   for s in ('s1-23e', 's2-27e', 's3-37e')]
        cfg = 'soft-teacher_faster-rcnn_r50-mocov2-pre_fpn_2xb5-12e_labeled-unlabeled'
    else:
        folders = ['work_dirs/faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_2xb8-ms-36e_labeled']
        cfg = 'soft-teacher_faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_2xb5-12e_labeled-' \
            'unlabeled'
    assert [line.split(':')[0] for line in r.stdout.splitlines()][-2:] == [
        'semi-supervised', 'test']
    assert f'configs/soft_teacher/{cfg}.py --data-root {data["labeled"]} --unlabeled ' \
        f'{data["unlabeled"]} --cfg-options load_from=best-of://{",".join(folders)} ' \
        '--cfg-options train_cfg.max_epochs=2' in semi
    assert '--job-name=det-semi' in semi and '--ntasks-per-node=2' in semi
    assert f'--dependency=afterok:{1000 + len(earlier)}' in semi
    # the test evaluates the semi-supervised stage's best checkpoint with its config
    assert f'configs/soft_teacher/{cfg}.py --best-of work_dirs/{cfg} ' in test
    assert f'--dependency=afterok:{1001 + len(earlier)}' in test


def test_semi_supervised_stage_needs_the_unlabeled_images(rig, data):
    moco = rig['tmp'] / 'moco.pth'
    moco.write_bytes(b'x')
    r = run(rig, [SUBMIT], LABELED=data['labeled'], MOCO=str(moco), PYTHON=sys.executable,
            SEMI='1')
    assert_refused(rig, r, 'SEMI=1 trains on the unlabeled images too: set UNLABELED')
    r = run(rig, [SUBMIT], LABELED=data['labeled'], MOCO=str(moco), PYTHON=sys.executable,
            SEMI='1', UNLABELED=str(rig['tmp'] / 'missing'))
    assert_refused(rig, r, 'is not a folder')
    r = run(rig, [SUBMIT], LABELED=data['labeled'], MOCO=str(moco), PYTHON=rig['python'],
            SEMI='1', UNLABELED=data['unlabeled'], RECIPE='vitdet')
    assert_refused(rig, r, 'SEMI=1 follows the ResNet-50 fine-tuning')


def test_mae_warmup_in_the_pipeline_is_the_configs():
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(
        REPO, 'configs/mae/mae_vit-base-p16_4xb64-amp-coslr-80e_unlabeled224.py'))
    text = open(SUBMIT).read()
    assert f'MAE_WARMUP={cfg.param_scheduler[0].end} ' in text
    assert cfg.param_scheduler[1].begin == cfg.param_scheduler[0].end


@pytest.mark.slow
def test_vitdet_recipe_is_one_job_with_amp_from_an_mae_checkpoint(rig, data):
    mae = rig['tmp'] / 'mae.pth'
    mae.write_bytes(b'x')
    r = run(rig, [SUBMIT], LABELED=data['labeled'], MOCO=str(mae), PYTHON=sys.executable,
            RECIPE='vitdet')
    assert r.returncode == 0, r.stdout + r.stderr
    det, test = rig['calls']()
    cfg = 'faster-rcnn_vit-b-win-mae-pre_sfp_1xb2-lsj-80e_labeled1024'
    assert f'configs/vitdet/{cfg}.py --data-root {data["labeled"]} --pretrained {mae} --amp' in det
    assert '--job-name=det-vitdet' in det and '--ntasks-per-node=1' in det
    assert f'--best-of work_dirs/{cfg} ' in test


@pytest.mark.parametrize('pretrain,recipe,why', [
    ('mocov2', 'peer-vit', 'RECIPE=peer-vit fine-tunes a ViT: set PRETRAIN=mae'),
    ('densecl', 'vitdet', 'RECIPE=vitdet fine-tunes a ViT: set PRETRAIN=mae'),
    ('mae', 'seed', 'PRETRAIN=mae pretrains a ViT: set RECIPE=peer-vit or RECIPE=vitdet'),
    ('mae', 'ssl', 'PRETRAIN=mae pretrains a ViT')])
def test_pretraining_and_recipe_of_different_backbones_are_refused(rig, data, pretrain, recipe,
                                                                   why):
    """In the shell's checks, before the Python start (seconds of imports)."""
    r = run(rig, [SUBMIT], LABELED=data['labeled'], UNLABELED=data['unlabeled'],
            PYTHON=rig['python'], PRETRAIN=pretrain, RECIPE=recipe)
    assert_refused(rig, r, why)


@pytest.mark.parametrize('var', ['PRETRAIN', 'RECIPE'])
def test_unknown_pretraining_or_recipe(rig, data, var):
    r = run(rig, [SUBMIT], LABELED=data['labeled'], UNLABELED=data['unlabeled'],
            PYTHON=rig['python'], **{var: 'simclr'})
    assert_refused(rig, r, f'{var}=simclr', 'expected')


@pytest.mark.slow
def test_a_fine_tuning_folder_of_another_pretraining_is_refused_at_submit_time(
        rig, data, monkeypatch, moco_checkpoint):
    """A finished chain's folder submitted again with PRETRAIN=densecl: s1's --pretrained file
    did not exist yet (the pretraining queued with it writes it), so the check left it out;
    pretraining ran for days, then s1 stopped on changed inputs."""
    import torch
    import train
    from toolkit.resume_policy import run_inputs, write_record
    s1 = os.path.join(REPO, 'configs', 'faster_rcnn',
                      'faster-rcnn_r50-mocov2-pre_fpn_2xb2-s1-23e_labeled.py')
    moco = 'work_dirs/mocov2_resnet50_4xb32-coslr-200e_unlabeled224/keep_epoch_100.pth'
    # s1 as the first submission trained it (2 processes), finished at epoch 23
    monkeypatch.chdir(rig['cwd'])
    monkeypatch.setenv('WORLD_SIZE', '2')
    cfg, _ = train.build_cfg(train.parse_args([
        s1, '--data-root', data['labeled'], '--pretrained', moco, '--cfg-options',
        'train_cfg.max_epochs=23', 'param_scheduler.1.milestones=[23,27]',
        'param_scheduler.1.end=37', '--check-inputs-only']))
    os.makedirs(os.path.dirname(moco))
    shutil.copy(moco_checkpoint[0], moco)  # the pretraining it started from
    os.makedirs(cfg.work_dir)
    write_record(cfg.work_dir, run_inputs(cfg))
    last = os.path.abspath(os.path.join(cfg.work_dir, 'epoch_23.pth'))
    torch.save(dict(meta=dict(epoch=23, iter=230, seed=5), state_dict={}, optimizer={},
                    param_schedulers=[], message_hub={}), last)
    with open(os.path.join(cfg.work_dir, 'last_checkpoint'), 'w') as f:
        f.write(last)
    r = run(rig, [SUBMIT], LABELED=data['labeled'], UNLABELED=data['unlabeled'],
            PYTHON=sys.executable)  # the same chain again: s1's record fits
    assert r.returncode == 0, r.stdout + r.stderr
    os.remove(rig['tmp'] / 'calls.log')
    starts = rig['tmp'] / 'python-starts.log'
    python = counted_python(rig['bin'] / 'counted-python', starts)
    r = run(rig, [SUBMIT], LABELED=data['labeled'], UNLABELED=data['unlabeled'],
            PYTHON=python, PRETRAIN='densecl')
    assert_refused(rig, r, cfg.work_dir, 'model.backbone.init_cfg.checkpoint',
                   'densecl_resnet50_4xb32-coslr-200e_unlabeled224/keep_epoch_100.pth')
    # the environment, LABELED and the existing folders checked in one Python start
    starts = starts.read_text().splitlines()
    assert len(starts) == 1 and 'check_dataset.py' in starts[0] and 'check_stages.py' in starts[0]
    assert 'data_root' not in r.stderr, r.stderr  # only the pretraining differs
