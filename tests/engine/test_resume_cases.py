"""The resume and stop cases of a careful review, each at the function level: a new run over an
old one, a rollback and a restart, another process count, a kill between the last two saves,
SIGTERM, a time-limit signal before training or during validation."""
import importlib
import os
import signal
import types
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

import custom_modules  # noqa: F401  (registers the hooks and the atomic backend)
from custom_modules.engine.hooks import time_limit_hook
from custom_modules.fileio.atomic_local import AtomicLocalBackend
from toolkit.resume_policy import ChangedInputsError, resolve_resume, run_inputs
from custom_modules.errors import UserError
from helpers import REPO, run_tool


S1 = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-s1-23e_labeled.py')
MOCO = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py')
MOCO_DEMO = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py')


def cfg_for(tmp_path, data='a', path=S1):
    cfg = Config.fromfile(path)
    cfg.work_dir = str(tmp_path / 'work')
    root = str(tmp_path / data)
    os.makedirs(root, exist_ok=True)
    cfg.train_dataloader.dataset.data_root = root
    return cfg


def resume_point(path, epoch, iter_):
    """A resume point as CheckpointHook leaves it: the file, then ``last_checkpoint``."""
    torch.save(dict(meta=dict(epoch=epoch, iter=iter_, seed=5), state_dict={}, optimizer={},
                    param_schedulers=[], message_hub={}), path)
    with open(os.path.join(os.path.dirname(path), 'last_checkpoint'), 'w') as f:
        f.write(path)


def test_new_run_over_resume_points_refuses_and_leaves_the_record(tmp_path):
    """A command without --resume in a folder with resume points would rewrite the
    record for data B and keep data A's checkpoints; a later --resume then continued them."""
    cfg = cfg_for(tmp_path, 'a')
    resolve_resume(cfg, None, run_inputs(cfg))
    resume_point(os.path.join(cfg.work_dir, 'epoch_5.pth'), 5, 50)
    b = cfg_for(tmp_path, 'b')
    with pytest.raises(UserError) as e:
        resolve_resume(b, None, run_inputs(b))
    msg = str(e.value)
    assert 'epoch_5.pth' in msg and '--resume' in msg and '--work-dir NEW_DIR' in msg
    b = cfg_for(tmp_path, 'b')
    with pytest.raises(ChangedInputsError, match='data_root'):  # the record still says data A
        resolve_resume(b, 'auto', run_inputs(b))
    a = cfg_for(tmp_path, 'a')
    assert resolve_resume(a, 'auto', run_inputs(a)).meta['epoch'] == 5


def _diverged_at_15(tmp_path):
    """A work folder whose run saved epochs 12 and 15; (folder, epoch 12's checkpoint)."""
    cfg = cfg_for(tmp_path)
    resolve_resume(cfg, None, run_inputs(cfg))
    for n in (12, 15):
        resume_point(os.path.join(cfg.work_dir, f'epoch_{n}.pth'), n, 10 * n)
    return cfg.work_dir, os.path.join(cfg.work_dir, 'epoch_12.pth')


def test_explicit_rollback_holds_across_restarts(tmp_path):
    """--resume epoch_12.pth after a run diverged at epoch 15, then a requeue before the
    continued run saved anything: the restart continued epoch_15.pth."""
    work, rollback = _diverged_at_15(tmp_path)
    cfg = cfg_for(tmp_path)
    assert resolve_resume(cfg, rollback, run_inputs(cfg)).meta['epoch'] == 12
    cfg = cfg_for(tmp_path)
    resolve_resume(cfg, rollback, run_inputs(cfg), restarted=True)
    assert cfg.load_from == rollback, 'the restart went back to the abandoned run'
    cfg = cfg_for(tmp_path)  # a plain --resume (outside Slurm) continues the rollback too
    assert resolve_resume(cfg, 'auto', run_inputs(cfg)).meta['epoch'] == 12
    resume_point(os.path.join(work, 'epoch_13.pth'), 13, 130)  # the continued run's first save
    cfg = cfg_for(tmp_path)
    resolve_resume(cfg, rollback, run_inputs(cfg), restarted=True)
    assert cfg.load_from == os.path.join(work, 'epoch_13.pth')


def test_a_rollback_holds_when_the_first_start_is_requeued_before_it_decides(tmp_path,
                                                                             monkeypatch):
    """--resume epoch_12.pth after a run diverged at epoch 15, and the job requeued before its
    first start decided anything (preemption during imports, a node failure at launch): the
    restart found the folder's own epoch_15.pth and continued the abandoned run."""
    monkeypatch.setenv('SLURM_JOB_ID', '77')
    work, rollback = _diverged_at_15(tmp_path)
    cfg = cfg_for(tmp_path)
    resolve_resume(cfg, rollback, run_inputs(cfg), restarted=True)
    assert cfg.load_from == rollback, f'the restart continued {cfg.load_from}'
    resume_point(os.path.join(work, 'epoch_13.pth'), 13, 130)  # the continued run's first save
    cfg = cfg_for(tmp_path)  # the same job restarted again: its own progress
    resolve_resume(cfg, rollback, run_inputs(cfg), restarted=True)
    assert cfg.load_from == os.path.join(work, 'epoch_13.pth')
    monkeypatch.setenv('SLURM_JOB_ID', '78')  # another job with the same --resume, requeued early
    cfg = cfg_for(tmp_path)
    resolve_resume(cfg, rollback, run_inputs(cfg), restarted=True)
    assert cfg.load_from == rollback  # as its first start would have decided


def test_explicit_rollback_with_other_inputs_refuses(tmp_path):
    """--resume PATH rewrote the record without comparing: a rollback with other
    data continued data A's checkpoint silently."""
    cfg = cfg_for(tmp_path, 'a')
    resolve_resume(cfg, None, run_inputs(cfg))
    for n in (12, 15):
        resume_point(os.path.join(cfg.work_dir, f'epoch_{n}.pth'), n, 10 * n)
    rollback = os.path.join(cfg.work_dir, 'epoch_12.pth')
    b = cfg_for(tmp_path, 'b')
    with pytest.raises(ChangedInputsError, match='data_root') as e:
        resolve_resume(b, rollback, run_inputs(b))
    assert f'continue {rollback} with the new inputs (--allow-input-change)' in str(e.value)
    assert '--work-dir NEW_DIR' in str(e.value)
    with open(os.path.join(cfg.work_dir, 'last_checkpoint')) as f:
        assert f.read().endswith('epoch_15.pth')  # refused: nothing rewritten
    a = cfg_for(tmp_path, 'a')  # the folder's own inputs: the rollback goes ahead
    assert resolve_resume(a, 'auto', run_inputs(a)).meta['epoch'] == 15
    b = cfg_for(tmp_path, 'b')
    decision = resolve_resume(b, rollback, run_inputs(b), allow_input_change=True)
    assert decision.meta['epoch'] == 12 and 'with other inputs' in decision.message
    # a checkpoint of another folder starts a fresh one unchecked (the next stage's config)
    fresh = cfg_for(tmp_path, 'b')
    fresh.work_dir = str(tmp_path / 'next-stage')
    assert resolve_resume(fresh, rollback, run_inputs(fresh)).meta['epoch'] == 12


def test_a_new_run_where_a_branch_start_saved_nothing_starts(tmp_path):
    """`--resume OTHER/epoch_12.pth` into a fresh folder (a branch) that stopped before saving:
    the folder's last_checkpoint names the other folder's file, and a new run there was refused
    as over "the resume points of an earlier run", though the folder holds none."""
    base, branch_from = _diverged_at_15(tmp_path)
    branch = cfg_for(tmp_path)
    branch.work_dir = str(tmp_path / 'branch')
    assert resolve_resume(branch, branch_from, run_inputs(branch)).meta['epoch'] == 12
    fresh = cfg_for(tmp_path, 'b')
    fresh.work_dir = branch.work_dir
    assert resolve_resume(fresh, None, run_inputs(fresh)).meta is None  # a new run
    assert fresh.resume is False
    # its restart (train.sbatch passes --resume) continues nothing of the abandoned branch
    again = cfg_for(tmp_path, 'b')
    again.work_dir = branch.work_dir
    assert resolve_resume(again, 'auto', run_inputs(again), restarted=True).meta is None
    assert not again.get('load_from')
    # a branch that saved a checkpoint of its own still refuses a new run
    resume_point(os.path.join(branch.work_dir, 'epoch_13.pth'), 13, 130)
    with open(os.path.join(branch.work_dir, 'last_checkpoint'), 'w') as f:
        f.write(branch_from)  # the branch started again from the other folder
    fresh = cfg_for(tmp_path, 'b')
    fresh.work_dir = branch.work_dir
    with pytest.raises(UserError, match='epoch_13.pth'):
        resolve_resume(fresh, None, run_inputs(fresh))


def test_lr_not_rescaled_for_another_process_count_is_said(tmp_path):
    """auto_scale_lr scales the LR for the new total batch, then the resumed optimizer
    and scheduler state put the old one back; the message says so."""
    cfg = cfg_for(tmp_path, path=MOCO)
    four = dict(run_inputs(cfg), world_size=4)
    resolve_resume(cfg, None, four)
    resume_point(os.path.join(cfg.work_dir, 'epoch_5.pth'), 5, 50)
    cfg = cfg_for(tmp_path, path=MOCO)
    two = dict(run_inputs(cfg), world_size=2)
    with pytest.raises(ChangedInputsError, match='learning rate stays'):
        resolve_resume(cfg, 'auto', two)
    cfg = cfg_for(tmp_path, path=MOCO)
    decision = resolve_resume(cfg, 'auto', two, allow_input_change=True)
    assert 'learning rate stays' in decision.message and 'world_size: 4 -> 2' in decision.message


def test_another_checkpoint_interval_resumes(tmp_path):
    """How often TimeLimitHook saves inside an epoch changes nothing that is trained: a job
    resubmitted with another save_every_minutes continues its run."""
    cfg = cfg_for(tmp_path)
    resolve_resume(cfg, None, run_inputs(cfg))
    resume_point(os.path.join(cfg.work_dir, 'epoch_5.pth'), 5, 50)
    cfg = cfg_for(tmp_path)
    hook = next(h for h in cfg.custom_hooks if h['type'] == 'TimeLimitHook')
    hook['save_every_minutes'] = 5
    assert resolve_resume(cfg, 'auto', run_inputs(cfg)).meta['epoch'] == 5
    cfg = cfg_for(tmp_path, 'b')  # while another input still stops it
    with pytest.raises(ChangedInputsError, match='data_root'):
        resolve_resume(cfg, 'auto', run_inputs(cfg))


class _ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(1, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        out = self.fc(torch.stack(inputs))
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else list(out)


class _Seen(BaseMetric):
    """Counts the validation samples."""

    def process(self, data_batch, data_samples):
        self.results.append(len(data_samples))

    def compute_metrics(self, results):
        return dict(seen=sum(results))


class _SignalAt(Hook):
    """Sends ``signum`` to this process before the iteration ``at``."""

    def __init__(self, at, signum):
        self.at, self.signum = at, signum

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            os.kill(os.getpid(), self.signum)


def toy_runner(work, max_epochs=2, hooks=(), **kw):
    """The pretraining config's checkpoint hooks on a toy model, 2 iterations per epoch."""
    cfg = Config.fromfile(MOCO)
    config_hooks = {h['type']: h for h in cfg.custom_hooks}
    return Runner(
        model=_ToyModel(), work_dir=str(work), experiment_name=f'cases-{uuid.uuid4().hex}',
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(1))] * 4, batch_size=2,
                              num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=cfg.default_hooks.checkpoint),
        custom_hooks=[config_hooks['TimeLimitHook'], config_hooks['KeepCheckpointHook'],
                      *hooks], **kw)


def test_a_finished_run_always_has_its_keep_file(tmp_path, monkeypatch, signals_restored):
    """Killed after the last epoch's resumable checkpoint, before its keep file: the run
    looked finished and the next stage found no --pretrained file."""
    put, written = AtomicLocalBackend.put, []

    def killed_at_the_second(self, obj, filepath):
        name = os.path.basename(filepath)
        if name in ('epoch_2.pth', 'keep_epoch_2.pth'):
            if written:
                raise KeyboardInterrupt  # the job is killed here
            written.append(name)
        return put(self, obj, filepath)
    monkeypatch.setattr(AtomicLocalBackend, 'put', killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        toy_runner(tmp_path / 'work').train()
    finished = (tmp_path / 'work' / 'epoch_2.pth').exists()
    assert not finished or (tmp_path / 'work' / 'keep_epoch_2.pth').exists(), (
        'the run ended at epoch 2 without keep_epoch_2.pth')


class _Terminated(Exception):
    pass


def _terminated(signum, frame):
    raise _Terminated  # SIGTERM's default action, without ending pytest


def test_sigterm_in_training_saves_and_leaves_the_requeue_to_slurm(tmp_path, monkeypatch,
                                                                   signals_restored):
    """Preemption and scancel send SIGTERM, then SIGKILL after a grace time; it used to
    kill at once, losing every iteration since the epoch checkpoint."""
    signal.signal(signal.SIGTERM, _terminated)
    monkeypatch.setenv('SLURM_JOB_ID', '42')
    calls, run = [], time_limit_hook.subprocess.run
    monkeypatch.setattr(time_limit_hook.subprocess, 'run', lambda cmd, **kw: calls.append(cmd) if
                        cmd[0] == 'scontrol' else run(cmd, **kw))
    work = tmp_path / 'work'
    with pytest.raises(SystemExit) as e:
        toy_runner(work, hooks=[_SignalAt(2, signal.SIGTERM)]).train()
    assert e.value.code == 128 + signal.SIGTERM
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_3.pth')
    assert torch.load(work / 'iter_3.pth', weights_only=False)['meta']['iter'] == 3
    assert calls == []  # no scontrol: Slurm requeues a preempted job itself; scancel means stop


@pytest.mark.parametrize('how', ['pipeline', 'train.sbatch', 'srun'])
def test_a_failed_requeue_says_what_continues_the_job(monkeypatch, how):
    """The message said 'submit the same sbatch command', a job nothing after it in a
    chain waits for; it prints the command that continues the job (the chain's for a stage)."""
    monkeypatch.setenv('SLURM_JOB_ID', '42')
    monkeypatch.setenv('SLURM_SUBMIT_DIR', '/sub')
    monkeypatch.delenv('PIPELINE_RESUBMIT', raising=False)
    monkeypatch.setattr(time_limit_hook.subprocess, 'run', lambda cmd, **kw: types.SimpleNamespace(
        returncode=1, stderr='Requeue of job 42 not allowed\n'))
    monkeypatch.setattr(time_limit_hook.sys, 'argv', [
        'tools/train.py', 'cfg.py', '--resume', '--work-dir', 'w d', '--launcher', 'slurm'])
    if how == 'pipeline':
        monkeypatch.setenv('PIPELINE_RESUBMIT', 'cd /sub && MOCO=m.pth /r/submit_pipeline.sh')
    elif how == 'srun':  # tools/slurm_train.sh
        monkeypatch.setattr(time_limit_hook.sys, 'argv', ['tools/train.py', 'cfg.py', '--launcher',
                                                    'slurm'])
    runner = _Runner()
    time_limit_hook._requeue(runner)
    [error] = runner.errors
    assert error.startswith('scontrol requeue 42 failed (Requeue of job 42 not allowed): the job '
                            'ends here with exit status 75.'), error
    assert 'same sbatch command' not in error
    sbatch = os.path.join(REPO, 'tools', 'slurm', 'train.sbatch')
    assert error.endswith({
        'pipeline': 'the jobs waiting behind this one replaced): '
                    'cd /sub && MOCO=m.pth /r/submit_pipeline.sh',
        'train.sbatch': f"from /sub: sbatch ... {sbatch} cfg.py --work-dir 'w d'",
        'srun': 'run the same command again with --resume.'}[how]), error


@pytest.mark.parametrize('explicit', [['--resume', '/w/epoch_12.pth'],
                                      ['--resume=/w/epoch_12.pth']])
@pytest.mark.parametrize('how', ['train.sbatch', 'srun'])
def test_the_continue_command_after_a_rollback_continues_the_newest_checkpoint(monkeypatch, how,
                                                                              explicit):
    """A job started with --resume epoch_12.pth printed that flag in the command that continues
    it: the new job (restart count 0) rolled back to epoch 12 again, losing every epoch since."""
    monkeypatch.setenv('SLURM_SUBMIT_DIR', '/sub')
    monkeypatch.delenv('PIPELINE_RESUBMIT', raising=False)
    argv = ['tools/train.py', 'cfg.py', *explicit, '--amp', '--launcher', 'slurm']
    if how == 'train.sbatch':  # train.sbatch puts its own --resume first
        argv[2:2] = ['--resume']
    monkeypatch.setattr(time_limit_hook.sys, 'argv', argv)
    said = time_limit_hook._continuation()
    if how == 'train.sbatch':
        sbatch = os.path.join(REPO, 'tools', 'slurm', 'train.sbatch')
        assert said.endswith(f'sbatch ... {sbatch} cfg.py --amp'), said
    else:  # tools/slurm_train.sh: the user's own command, less the rollback
        assert said.startswith('Continue it from its latest checkpoint: run the same command '
                               f'again with --resume in place of {" ".join(explicit)}'), said


def test_time_limit_signal_before_training_starts_is_logged(monkeypatch, signals_restored):
    """tools/train.py ignored a SIGUSR1 that arrived while it started (imports, data
    checks, building the runner) without a word."""
    import train
    importlib.reload(train)  # its first lines take SIGUSR1 over
    os.kill(os.getpid(), signal.SIGUSR1)
    runner = _Runner()
    time_limit_hook.TimeLimitHook().before_train(runner)
    assert runner.logger.warnings and 'before training started' in runner.logger.warnings[-1]
    assert not time_limit_hook._stop_requested  # not a stop: the job's time limit comes first


class _ValSeen(Hook):
    """Records each validation's epoch and iterations; sends SIGUSR1 during the first one, or
    ends the process there as ``kill -9`` does (no hook, no save)."""

    def __init__(self, signal_at=None, kill_at=None):
        self.signal_at, self.kill_at, self.runs = signal_at, kill_at, []

    def before_val_epoch(self, runner):
        self.runs.append([runner.epoch, 0])

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.runs[-1][1] += 1
        if len(self.runs) == 1 and batch_idx == self.signal_at:
            os.kill(os.getpid(), signal.SIGUSR1)
        if len(self.runs) == 1 and batch_idx == self.kill_at:
            raise KeyboardInterrupt


def val_runner(work, seen, **kw):
    """toy_runner with a validation of 4 iterations after every epoch, and an LR schedule (its
    checkpoints are resume points for tools/train.py)."""
    kw.setdefault('param_scheduler', dict(type='MultiStepLR', milestones=[100]))
    return toy_runner(work, hooks=[seen], val_cfg=dict(), val_evaluator=Evaluator(_Seen()),
                      val_dataloader=dict(dataset=[dict(inputs=torch.ones(1))] * 8,
                                          batch_size=2, num_workers=0,
                                          sampler=dict(type='DefaultSampler', shuffle=False)),
                      **kw)


def test_time_limit_signal_during_validation_stops_there(tmp_path, monkeypatch,
                                                         signals_restored):
    """The signal was only looked at between training iterations, so a long validation
    (COCO evaluation of the whole set) ran into the time limit: TIMEOUT, never requeued."""
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    work = tmp_path / 'work'

    def runner(seen, **kw):
        return toy_runner(work, hooks=[seen], val_cfg=dict(), val_evaluator=Evaluator(_Seen()),
                          val_dataloader=dict(dataset=[dict(inputs=torch.ones(1))] * 8,
                                              batch_size=2, num_workers=0,
                                              sampler=dict(type='DefaultSampler', shuffle=False)),
                          **kw)
    seen = _ValSeen(signal_at=1)
    with pytest.raises(SystemExit) as e:
        runner(seen).train()
    assert e.value.code == time_limit_hook.EXIT_TIME_LIMIT
    assert seen.runs == [[1, 2]], 'validation of epoch 1 was not cut short'
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')
    seen = _ValSeen()
    resumed = runner(seen, resume=True, load_from=str(work / 'iter_2.pth'))
    resumed.train()
    assert seen.runs == [[1, 4], [2, 4]]  # epoch 1 validated again, in full, then epoch 2
    assert resumed.iter == 4


class _Runner:
    epoch, iter, work_dir = 0, 0, '/nonexistent'
    train_loop = None  # an epoch-based loop's place (TimeLimitHook asks which kind)

    class message_hub:
        @staticmethod
        def get_info(key):
            return None

    def __init__(self):
        self.logger, self.warnings, self.errors = self, [], []

    def warning(self, msg):
        self.warnings.append(msg)

    def error(self, msg):
        self.errors.append(msg)


# Loaded first by every Python process started with it on PYTHONPATH, so its exit handler runs
# last: from then on the time-limit signal, without pause, until the process is gone (the
# loop keeps no pipe of the process open, so the test sees it end).
SIGNAL_DURING_TEARDOWN = '''
import atexit, os, subprocess
atexit.register(lambda: subprocess.Popen(
    ['bash', '-c', 'while kill -USR1 %d 2>/dev/null; do :; done' % os.getpid()],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
'''


@pytest.mark.slow
def test_the_time_limit_signal_in_a_finished_runs_teardown_does_not_fail_it(tmp_path,
                                                                             synthetic_root):
    """A finished run ends with exit status 0 whenever SIGUSR1 lands: CPython puts a signal with
    a Python handler back to its default action (terminate) early in its shutdown, so one that
    came then killed the finished run (exit 138 under srun) and failed its job and the jobs
    waiting for it."""
    lib = tmp_path / 'lib'
    lib.mkdir()
    (lib / 'sitecustomize.py').write_text(SIGNAL_DURING_TEARDOWN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(lib), REPO]))
    work = tmp_path / 'work'
    r = run_tool('train.py', MOCO_DEMO, '--data-root', os.path.join(synthetic_root, 'unlabeled'),
                 '--work-dir', work, '--cfg-options', 'train_cfg.max_epochs=1',
                 'train_dataloader.batch_size=8', 'train_dataloader.num_workers=0',
                 'train_dataloader.persistent_workers=False', env=env)
    assert r.returncode == 0, f'exit status {r.returncode}\n{r.stderr[-3000:]}'
    assert (work / 'epoch_1.pth').exists()


def test_validation_killed_without_a_signal_runs_again_after_the_restart(tmp_path, monkeypatch,
                                                                         signals_restored):
    """kill -9, a node failure or SIGKILL after KillWait during validation: the restart
    continued epoch_1.pth with nothing saying that its validation never ended, so epoch 1 was
    never validated (nor, for a stage's last epoch, a candidate for --best-of)."""
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    work = tmp_path / 'work'
    seen = _ValSeen(kill_at=1)
    with pytest.raises(KeyboardInterrupt):
        val_runner(work, seen).train()
    assert seen.runs == [[1, 2]]
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_1.pth')
    seen = _ValSeen()
    val_runner(work, seen, resume=True, load_from=str(work / 'epoch_1.pth')).train()
    assert seen.runs == [[1, 4], [2, 4]], 'epoch 1 was not validated after the restart'


def _finished(work, max_epochs):
    """tools/train.py's verdict on the folder's latest resume point."""
    import train
    from toolkit.resume_policy import _latest_resume_point
    path, meta = _latest_resume_point(str(work))
    return train.finished(Config(dict(train_cfg=dict(max_epochs=max_epochs), load_from=path)),
                          meta)


@pytest.mark.parametrize('stop', ['signal', 'kill'])
def test_a_stop_during_the_last_validation_finishes_after_the_restart(tmp_path, monkeypatch,
                                                                      signals_restored, stop):
    """A stop during a stage's last validation left iter_N.pth, with the validation pending, as
    the folder's last checkpoint for good: tools/train.py never took a folder whose latest
    resume point is an iter_* file as finished, so every resubmission of the chain queued the
    stage (and all after it) again."""
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    done = tmp_path / 'uninterrupted'
    val_runner(done, _ValSeen(), max_epochs=1).train()
    assert _finished(done, 1)
    work = tmp_path / 'work'
    seen = _ValSeen(**{'signal_at' if stop == 'signal' else 'kill_at': 1})
    with pytest.raises(SystemExit if stop == 'signal' else KeyboardInterrupt):
        val_runner(work, seen, max_epochs=1).train()
    assert not _finished(work, 1), 'taken as finished before its last validation ran'
    last = (work / 'last_checkpoint').read_text()
    seen = _ValSeen()
    val_runner(work, seen, max_epochs=1, resume=True, load_from=last).train()
    assert seen.runs == [[1, 4]]
    assert _finished(work, 1), (
        f'not finished after its last validation ran: {(work / "last_checkpoint").read_text()}')


def test_scancel_during_the_time_limit_save_is_not_requeued(monkeypatch, signals_restored):
    """scancel while rank 0 wrote the checkpoint of a time-limit stop: it requeued the job
    anyway (Slurm requeues a completing job), and the cancelled job came back."""
    monkeypatch.setenv('SLURM_JOB_ID', '42')
    calls = []
    monkeypatch.setattr(time_limit_hook.subprocess, 'run', lambda cmd, **kw: calls.append(cmd)
                        or types.SimpleNamespace(returncode=0, stderr=''))
    hook = time_limit_hook.TimeLimitHook()

    def save(runner, epoch, iter_):
        time_limit_hook._request_stop(signal.SIGTERM, None)  # scancel while the file is written
        return '/w/iter_3.pth'
    monkeypatch.setattr(hook, '_save', save)
    runner = _Runner()
    with pytest.raises(SystemExit) as e:
        hook._stop(runner, signal.SIGUSR1, epoch=0, iter_=3)
    assert calls == [], 'requeued after scancel'
    assert e.value.code == 128 + signal.SIGTERM


def resumable_runner(work, batch_size, max_epochs, hooks=(), **kw):
    """toy_runner's model and data (4 samples) with the configs' loop and batch sampler:
    ``4 / batch_size`` batches per epoch, as another number of processes changes it."""
    cfg = Config.fromfile(MOCO)
    config_hooks = {h['type']: h for h in cfg.custom_hooks}
    return Runner(
        model=_ToyModel(), work_dir=str(work), experiment_name=f'cases-{uuid.uuid4().hex}',
        train_dataloader=_resumable_loader(batch_size),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        param_scheduler=dict(type='MultiStepLR', milestones=[100]),
        train_cfg=dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs),
        default_hooks=dict(checkpoint=cfg.default_hooks.checkpoint),
        custom_hooks=[config_hooks['TimeLimitHook'], *hooks], **kw)


def _resumable_loader(batch_size):
    from torch.utils.data import DataLoader
    from mmengine.dataset import DefaultSampler, pseudo_collate
    from custom_modules.datasets.samplers import ResumableBatchSampler
    dataset = [dict(inputs=torch.ones(1))] * 4
    return DataLoader(dataset, collate_fn=pseudo_collate, batch_sampler=ResumableBatchSampler(
        DefaultSampler(dataset, shuffle=False), batch_size))


def test_another_batch_count_per_epoch_resumes_at_an_epoch_end(tmp_path, monkeypatch,
                                                                signals_restored):
    """--allow-input-change with another number of GPUs (here: another batch size, the same
    effect on the batches per epoch): the resumed iteration counter no longer fitted the epoch
    length, and any resume after epoch 0 stopped with a traceback."""
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    work = tmp_path / 'work'
    resumable_runner(work, batch_size=2, max_epochs=2).train()  # 2 batches per epoch
    resumed = resumable_runner(work, batch_size=1, max_epochs=3, resume=True,
                               load_from=str(work / 'epoch_2.pth'))
    resumed.train()  # 4 batches per epoch
    assert (resumed.epoch, resumed.iter) == (3, 8)
    again = resumable_runner(work, batch_size=1, max_epochs=4, resume=True,
                             load_from=str(work / 'epoch_3.pth'))
    again.train()  # and the epochs after it
    assert (again.epoch, again.iter) == (4, 12)


@pytest.mark.parametrize('signal_at', [0, 2])
def test_an_in_epoch_checkpoint_with_another_batch_count_is_refused(tmp_path, monkeypatch,
                                                                    signals_restored, signal_at):
    """An in-epoch checkpoint resumed with another number of batches per epoch: in epoch 0 it
    silently skipped the wrong samples (the batches trained are not the batches to skip), later
    it stopped with a traceback. One line says what to do instead."""
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    work = tmp_path / 'work'
    with pytest.raises(SystemExit):
        resumable_runner(work, batch_size=2, max_epochs=2,
                         hooks=[_SignalAt(signal_at, signal.SIGUSR1)]).train()
    saved = (work / 'last_checkpoint').read_text()
    assert os.path.basename(saved) == f'iter_{signal_at + 1}.pth'
    resumed = resumable_runner(work, batch_size=1, max_epochs=2, resume=True, load_from=saved)
    with pytest.raises(UserError) as e:
        resumed.train()
    msg = str(e.value)
    assert '\n' not in msg and 'after 1 of its 2 batches' in msg and '4 batches' in msg, msg
