"""Day one on a GPU: every recipe trained briefly through tools/train.py, a time-limit stop and
its resume, tools/test.py and tools/infer.py, into one table.

    python tools/benchmarks/gpu_day_one.py [--tiny] [--work DIR] [--out DIR] [--budget-s 420]

Generates course-like data with tools/make_synthetic_data.py (224x224 PNGs; 375-500 px JPEGs
labeled with the real class table), then trains each recipe's own config with its own loader
settings (workers, persistent workers, pin memory) and these overrides only: one epoch over the
first N images (`train_dataloader.dataset.indices`, N = iterations x batch), a logging window
of LOG iterations, `--amp` where the recipe trains with it, `--pretrained` from the MoCo v2 and
MAE runs before. From each run's scalars.json: img/s including data loading (batch / mean
iteration `time`), the share of it spent waiting for data (`data_time` / `time`), peak GPU
memory (mmengine's `memory`); GPU utilization from nvidia-smi samples taken while it trained.
The first logging window is left out (start-up, first kernels). Then a second s1 run gets
SIGUSR1 mid-epoch (TimeLimitHook saves iter_N.pth, exit 75), is continued with `--resume` and
compared with the uninterrupted s1 run; tools/test.py evaluates the s1 checkpoint (the 12-line
COCO summary) and tools/infer.py draws a few validation images. Writes gpu_day_one.md and
gpu_day_one.json to --out (default: $OUT, else the work folder).

Each step runs only while the time budget lasts (a training past its cap gets SIGUSR1 and is
measured up to there); the plan with step-only estimates from docs/performance.md is printed
first. --tiny is the same on CPU in about two minutes (tests/tools/test_gpu_day_one.py): a few
iterations at batch 2, no --amp, and small wrapper configs over the real ones with the CPU
demos' sizes (R50 detectors at 256x192, ViT-Tiny at 256 px) and plain fp32 for MAE.
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tools'))
from make_synthetic_data import CLASS_STYLES, make_dataset  # noqa: E402

EXIT_TIME_LIMIT = 75  # custom_modules/engine/hooks/time_limit_hook.py: a run stopped by SIGUSR1
POLL_S = 0.1
# docs/performance.md, one H200, training steps only (no decoding or augmentation)
H200_MOCO = 'MoCo v2 R50, AMP, batch 32: 986 img/s'
H200_DET_FP32 = 'Faster R-CNN R50-FPN, fp32, batch 2: 24.7-28.3 img/s'
H200_DET_AMP8 = 'Faster R-CNN R50-FPN (standard head, 1333x800), AMP, batch 8: 42.5 img/s'

_TINY_R50_DET = '''
# the CPU demos' scale: R50-FPN at 1333x800 takes ~9 s per image on 2 cores
img_scale = (256, 192)
train_scales = [(256, 154), (256, 192)]  # RandomResize's range (the SSL recipe's demo)
model = dict(train_cfg=dict(rpn_proposal=dict(nms_pre=600, max_per_img=300),
                            rcnn=dict(sampler=dict(num=64))),
             test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=300)))
train_dataloader = dict(dataset=dict(pipeline=[
    dict(p, scale=train_scales if p['type'] == 'RandomResize' else img_scale) if 'scale' in p
    else p for p in _base_.train_pipeline]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(p, scale=img_scale) if 'scale' in p else p for p in _base_.test_pipeline]))
test_dataloader = val_dataloader
'''
# ViT-Tiny (the MAE run's tiny encoder) at 256 px: ViT-B at 512-1024 px is minutes per step here
_TINY_VIT_DET = '''
side = 256
neck = _base_.model.neck
model = dict(
    backbone=dict(img_size=side, {arch}),
    # the feature pyramid takes ViT-Tiny's 192 channels instead of ViT-B's 768
    neck=[dict(n, in_channels=[192] * 4 if isinstance(n['in_channels'], list) else 192)
          for n in neck] if isinstance(neck, list) else dict(neck, in_channels=192),
    train_cfg=dict(rpn_proposal=dict(nms_pre=600, max_per_img=300),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=300)))
sizes = ('scale', 'crop_size', 'size')
train_dataloader = dict(dataset=dict(pipeline=[
    dict(p, **{{k: (side, side) for k in sizes if k in p}}) for p in _base_.train_pipeline]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(p, **{{k: (side, side) for k in sizes if k in p}}) for p in _base_.test_pipeline]))
test_dataloader = val_dataloader
'''
TINY_WRAPPERS = {
    # ViT-Tiny encoder with the MAE demo's small decoder; fp32: AmpOptimWrapper needs a GPU
    'mae': '''
model = dict(backbone=dict(arch='deit-tiny'),
             neck=dict(embed_dim=192, decoder_embed_dim=128, decoder_depth=2,
                       decoder_num_heads=4))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=_base_.optim_wrapper.optimizer,
                     accumulative_counts=_base_.optim_wrapper.accumulative_counts,
                     paramwise_cfg=_base_.optim_wrapper.paramwise_cfg)
''',
    's1': _TINY_R50_DET,
    'ssl': _TINY_R50_DET,
    'vit-s1': _TINY_VIT_DET.format(arch="arch='deit-tiny'"),
    'vitdet': _TINY_VIT_DET.format(
        arch="window_size=8, arch=dict(_delete_=True, embed_dims=192, num_layers=12, num_heads=3, "
             "feedforward_channels=768, global_attn_indexes=[2, 5, 8, 11])"),
}


@dataclass
class Run:
    name: str
    config: str
    batch: int  # per GPU: the config's own
    iters: int  # on the GPU; --tiny: `tiny_iters` at batch 2
    amp: bool = False  # --amp (MAE's config trains with AMP by itself)
    precision: str = 'fp32'
    pretrained: str | None = None  # the run whose checkpoint is --pretrained
    h200: str | None = None  # step-only figure from docs/performance.md
    h200_img_s: tuple = ()  # its img/s, or the range of its repeated runs
    cap_s: float = 75.0  # wall-clock cap on the GPU, start-up included
    tiny_iters: int = 2


RUNS = [
    Run('mocov2', 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py', 32, 200,
        amp=True, precision='AMP', h200=H200_MOCO, h200_img_s=(986, )),
    Run('densecl', 'configs/densecl/densecl_resnet50_4xb32-coslr-200e_unlabeled224.py', 32, 200,
        amp=True, precision='AMP'),
    Run('mae', 'configs/mae/mae_vit-base-p16_4xb64-amp-coslr-80e_unlabeled224.py', 64, 100,
        precision='AMP (config)'),
    Run('s1', 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-s1-23e_labeled.py', 2, 200,
        pretrained='mocov2', h200=H200_DET_FP32, h200_img_s=(24.7, 28.3), tiny_iters=4),
    Run('ssl', 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_2xb8-ms-36e_'
        'labeled.py', 8, 100, amp=True, precision='AMP', pretrained='mocov2', h200=H200_DET_AMP8,
        h200_img_s=(42.5, )),
    Run('vit-s1', 'configs/vitdet/faster-rcnn_vit-b-mae-pre_sfp_1xb2-s1-frozen-20e_labeled512.py',
        2, 150, pretrained='mae'),
    Run('vitdet', 'configs/vitdet/faster-rcnn_vit-b-win-mae-pre_sfp_1xb2-lsj-80e_labeled1024.py',
        2, 100, pretrained='mae', cap_s=90),
]
# the order steps run in: the hand-offs first, the resume check and evaluation on s1 early,
# the runs without a step-only estimate last, where the budget cuts them short
ORDER = ['mocov2', 'densecl', 'mae', 's1', 'resume', 'test', 'infer', 'ssl', 'vit-s1', 'vitdet']
STEP_CAPS = dict(resume=120, test=60, infer=45)
MIN_START_S = 40  # no step starts with less budget left
COLUMNS = ('run', 'config', 'precision', 'batch', 'iterations', 'img/s (with data)',
           'waiting for data', 'peak GPU memory (GiB)', 'GPU util', 'wall (s)',
           'H200 step-only (performance.md)', 'status')


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float('nan')


class GpuSampler:
    """nvidia-smi's utilization and memory every 200 ms, timestamped; nothing without it."""

    def __init__(self):
        self.samples = []
        try:
            self.proc = subprocess.Popen(
                ['nvidia-smi', '--query-gpu=utilization.gpu,memory.used',
                 '--format=csv,noheader,nounits', '-lms', '200'],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.proc = None
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                util, mem = (float(v) for v in line.split(',')[:2])
            except ValueError:
                continue
            self.samples.append((time.monotonic(), util, mem))

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()

    def util(self, t0, t1):
        inside = [u for t, u, _ in self.samples if t0 <= t <= t1]
        return mean(inside) if inside else None


class Scalars:
    """The records a training process appends to its scalars.json, as they arrive: the newest
    `<timestamp>/vis_data/scalars.json` of the work folder not there before the process."""

    def __init__(self, work_dir):
        self.work_dir = work_dir
        self.before = set(self._files())
        self.path, self.offset, self.records = None, 0, []

    def _files(self):
        return glob.glob(osp.join(self.work_dir, '*', 'vis_data', 'scalars.json'))

    def poll(self):
        if self.path is None:
            new = sorted(set(self._files()) - self.before)
            if not new:
                return
            self.path = new[-1]
        with open(self.path) as f:
            f.seek(self.offset)
            text = f.read()
        end = text.rfind('\n') + 1  # complete lines only
        self.offset += end
        now = time.monotonic()
        for line in text[:end].splitlines():
            self.records.append((now, json.loads(line)))

    def train(self):
        """(arrival time, record) of the training iterations (not validation)."""
        return [(t, r) for t, r in self.records if 'loss' in r and 'time' in r]


@dataclass
class Proc:
    rc: int | None
    wall_s: float
    log: str
    scalars: Scalars
    sampler: GpuSampler
    capped: bool = False
    signalled_at: int | None = None


def run_logged(cmd, log, cap_s, work_dir=None, signal_after=None):
    """Run cmd with its output in log; past cap_s, SIGUSR1 (a training stops and saves) and
    after 60 s more, kill. signal_after=N: SIGUSR1 once an iteration >= N is logged."""
    scalars = Scalars(work_dir) if work_dir else None
    sampler = GpuSampler()
    t0 = time.monotonic()
    capped, signalled_at, killed = False, None, False
    with open(log, 'w') as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                                env=dict(os.environ, PYTHONUNBUFFERED='1'))
        while proc.poll() is None:
            time.sleep(POLL_S)
            if scalars:
                scalars.poll()
                done = [r['iter'] for _, r in scalars.train()]
                if signal_after and signalled_at is None and done and done[-1] >= signal_after:
                    proc.send_signal(signal.SIGUSR1)
                    signalled_at = done[-1]
            elapsed = time.monotonic() - t0
            if elapsed > cap_s and not capped:
                capped = True
                proc.send_signal(signal.SIGUSR1 if scalars else signal.SIGTERM)
            if elapsed > cap_s + 60 and not killed:
                killed = True
                proc.kill()
    sampler.stop()
    if scalars:
        scalars.poll()
    return Proc(proc.returncode, time.monotonic() - t0, log, scalars, sampler, capped,
                signalled_at)


def tail(path, n=15):
    with open(path, errors='replace') as f:
        return ''.join(f.readlines()[-n:])


def train_stats(p: Proc, batch: int) -> dict:
    """img/s with data loading, data wait share, peak memory and GPU utilization over the
    logged windows after the first."""
    train = p.scalars.train()
    if not train:
        return dict(iterations=0)
    steady = train[1:] or train
    t = mean(r['time'] for _, r in steady)
    memory = [r['memory'] for _, r in train if 'memory' in r]
    return dict(iterations=train[-1][1]['iter'], img_s=batch / t,
                data_wait=mean(r['data_time'] for _, r in steady) / t,
                peak_gib=max(memory) / 1024 if memory else None,
                gpu_util=p.sampler.util(train[0][0], train[-1][0]) if len(train) > 1 else None)


def compare_resume(ref, resumed, saved_iter, exact):
    """The resumed run against the uninterrupted one, record by record (train records of
    scalars.json, same logging windows). Returns (ok, details).

    Same final iteration; a record for every logged iteration after the saved one; LR equal to
    1e-6 relative (a pure function of the iteration count: one iteration off in the linear
    warm-up moves it by ~1/iteration relative). Loss: on CPU identical (the resume replays
    exactly, tests/slurm/test_slurm.py). On a GPU cuDNN's nondeterministic kernels and AMP change
    the last bits of every step, so it is compared against the loss's own noise: a resume from
    the wrong batch, weights or RNG state lands on another point of the curve, as far off as
    neighbouring logging windows are from each other; the mean difference must stay under half
    of that mean record-to-record change of the uninterrupted run over the same span, which last-
    bit differences amplified over a few hundred small warm-up steps stay far below."""
    by_iter = {r['iter']: r for r in ref}
    after = [r for r in resumed if r['iter'] > saved_iter]
    problems = []
    if not after:
        return False, dict(problems=['the resumed run logged no iteration after the saved one'])
    if after[-1]['iter'] != ref[-1]['iter']:
        problems.append(f'ended at iteration {after[-1]["iter"]}, the uninterrupted run at '
                        f'{ref[-1]["iter"]}')
    pairs = [(r, by_iter[r['iter']]) for r in after if r['iter'] in by_iter]
    if len(pairs) != len(after):
        problems.append('logged iterations differ from the uninterrupted run\'s')
    lr_rel = max((abs(a['lr'] - b['lr']) / abs(b['lr']) for a, b in pairs if b['lr']),
                 default=0.0)
    if lr_rel > 1e-6:
        problems.append(f'LR differs by {lr_rel:.2e} relative')
    loss_diff = mean(abs(a['loss'] - b['loss']) for a, b in pairs)
    ref_losses = [r['loss'] for r in ref if r['iter'] > saved_iter]
    noise = mean(abs(x - y) for x, y in zip(ref_losses[1:], ref_losses[:-1]))
    tolerance = 0.0 if exact else 0.5 * noise
    if not loss_diff <= tolerance:
        problems.append(f'loss differs by {loss_diff:.4g} on average (tolerance {tolerance:.4g})')
    return not problems, dict(compared_records=len(pairs), lr_max_rel_diff=lr_rel,
                              loss_mean_abs_diff=loss_diff, loss_tolerance=tolerance,
                              loss_record_to_record=noise, problems=problems)


class DayOne:

    def __init__(self, args):
        self.args = args
        self.tiny = args.tiny
        self.work = osp.abspath(args.work)
        self.out = osp.abspath(args.out or os.environ.get('OUT') or self.work)
        self.t0 = time.monotonic()
        self.rows, self.checks, self.ckpts, self.records = {}, {}, {}, {}
        self.runs = {r.name: r for r in RUNS}
        self.log_window = 1 if self.tiny else 10
        self.data = osp.join(self.work, 'data')

    def left(self):
        return self.args.budget_s - (time.monotonic() - self.t0)

    def cap(self, seconds):
        """A step's wall-clock limit: its cap within the budget left; none in --tiny."""
        return math.inf if self.tiny else min(seconds, self.left())

    def say(self, msg):
        print(f'[{time.monotonic() - self.t0:6.1f} s] {msg}', flush=True)

    def iters(self, run):
        return run.tiny_iters if self.tiny else run.iters

    def batch(self, run):
        return 2 if self.tiny else run.batch

    # ------------------------------------------------------------------ plan and data

    def plan(self):
        if self.tiny:
            print('plan (tiny, CPU): ' + ', '.join(
                f'{r.name} {self.iters(r)} it' for r in RUNS) + '; no caps', flush=True)
            return
        print(f'plan (one GPU): budget {self.args.budget_s:.0f} s, a step starts only with '
              f'{MIN_START_S} s left; step-only estimates from docs/performance.md', flush=True)
        for name in ORDER:
            run = self.runs.get(name)
            if run is None:
                print(f'  {name:8s} cap {STEP_CAPS[name]} s', flush=True)
                continue
            n = self.iters(run) * self.batch(run)
            est = ('steps alone ~' + '-'.join(f'{n / v:.0f}' for v in run.h200_img_s[::-1])
                   + f' s at {run.h200}' if run.h200 else 'no step-only figure measured')
            print(f'  {name:8s} {run.iters} it x {run.batch} = {n} images, {est}; cap '
                  f'{run.cap_s:.0f} s with start-up', flush=True)

    def make_data(self):
        def most(pretraining):
            return max(self.iters(r) * self.batch(r) for r in RUNS
                       if ('unlabeled' in r.config) == pretraining)
        counts = dict(num_unlabeled=most(True), num_train=most(False),
                      num_val=2 if self.tiny else 32)
        spec = dict(counts, seed=0, min_size=375, max_size=500, num_classes=len(CLASS_STYLES))
        stamp = osp.join(self.data, 'spec.json')
        if osp.exists(stamp) and json.load(open(stamp)) == spec:
            self.say(f'data: reusing {self.data} ({counts})')
            return
        t = time.monotonic()
        s = make_dataset(self.data, workers=os.cpu_count() or 1, overwrite=True, **spec)
        json.dump(spec, open(stamp, 'w'))
        self.say(f'data: {s["unlabeled"]} PNGs 224x224, {s["training"]} + {s["validation"]} '
                 f'JPEGs 375-500 px ({s["objects"]} objects, {len(s["classes"])} classes) in '
                 f'{time.monotonic() - t:.1f} s')

    # ------------------------------------------------------------------ training

    def config_for(self, run):
        """The config to train: the real one, or in --tiny a wrapper over it."""
        path = osp.join(REPO, run.config)
        body = TINY_WRAPPERS.get(run.name) if self.tiny else None
        if not body:
            return path
        wrapper = osp.join(self.work, 'tiny_configs', osp.basename(run.config))
        os.makedirs(osp.dirname(wrapper), exist_ok=True)
        with open(wrapper, 'w') as f:
            f.write(f'_base_ = {path!r}\n{body}')
        return wrapper

    def train_cmd(self, run, work_dir):
        unlabeled = 'unlabeled' in run.config
        cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'), self.config_for(run),
               '--work-dir', work_dir,
               '--data-root', osp.join(self.data, 'unlabeled' if unlabeled else 'labeled')]
        if run.amp and not self.tiny:
            cmd.append('--amp')
        if run.pretrained:
            cmd += ['--pretrained', self.ckpts[run.pretrained]]
        return cmd + [
            '--cfg-options', 'train_cfg.max_epochs=1',
            f'train_dataloader.dataset.indices={self.iters(run) * self.batch(run)}',
            f'train_dataloader.batch_size={self.batch(run)}',
            f'default_hooks.logger.interval={self.log_window}',
            f'log_processor.window_size={self.log_window}']

    def train(self, run):
        row = dict(run=run.name, config=run.config,
                   precision='fp32' if self.tiny else run.precision, batch=self.batch(run),
                   planned_iterations=self.iters(run), h200=run.h200)
        self.rows[run.name] = row
        if run.pretrained and run.pretrained not in self.ckpts:
            row['status'] = f'not run: no {run.pretrained} checkpoint'
            return
        work_dir = osp.join(self.work, 'runs', run.name)
        shutil.rmtree(work_dir, ignore_errors=True)
        cap = self.cap(run.cap_s)
        p = run_logged(self.train_cmd(run, work_dir), osp.join(self.work, f'{run.name}.log'),
                       cap, work_dir)
        row.update(train_stats(p, row['batch']), wall_s=p.wall_s, rc=p.rc)
        row['status'] = ('ok' if p.rc == 0 else
                         f'stopped at the cap ({cap:.0f} s)' if p.capped else f'exit {p.rc}')
        if p.rc not in (0, EXIT_TIME_LIMIT):
            row['log_tail'] = tail(p.log)
        self.records[run.name] = [r for _, r in p.scalars.train()]
        keep = osp.join(work_dir, 'keep_epoch_1.pth')
        last = osp.join(work_dir, 'last_checkpoint')
        if osp.exists(keep):
            self.ckpts[run.name] = keep
        elif osp.exists(last):
            self.ckpts[run.name] = open(last).read().strip()
        self.say(f'{run.name}: {row["status"]}, {row.get("iterations", 0)} iterations, '
                 + (f'{row["img_s"]:.1f} img/s, {100 * row["data_wait"]:.0f}% waiting for data'
                    if row.get('img_s') else 'no timing logged') + f', {p.wall_s:.0f} s')
        if row.get('log_tail'):
            print(row['log_tail'], flush=True)

    # ------------------------------------------------------------------ checks

    def resume(self):
        """SIGUSR1 to a second s1 run mid-epoch, --resume, compare with the first s1 run."""
        run, ref = self.runs['s1'], self.records.get('s1')
        check = self.checks['resume'] = dict(run='s1')
        if not ref or self.rows['s1'].get('status') != 'ok':
            check.update(ok=False, verdict='not run: the s1 run did not finish')
            return
        work_dir = osp.join(self.work, 'runs', 's1-sigusr1')
        shutil.rmtree(work_dir, ignore_errors=True)
        cmd = self.train_cmd(run, work_dir)
        trigger = 1 if self.tiny else 50
        first = run_logged(cmd, osp.join(self.work, 's1-sigusr1.log'),
                           self.cap(STEP_CAPS['resume'] / 2), work_dir, signal_after=trigger)
        saved = sorted(int(f[5:-4]) for f in os.listdir(work_dir)
                       if f.startswith('iter_') and f.endswith('.pth'))
        epoch_len = self.iters(run)
        check.update(signal_after_iteration=first.signalled_at, exit=first.rc,
                     saved_iterations=saved, epoch_iterations=epoch_len)
        if first.rc != EXIT_TIME_LIMIT or len(saved) != 1 or not 0 < saved[0] < epoch_len:
            check.update(ok=False, verdict=f'FAIL: expected exit {EXIT_TIME_LIMIT} and one '
                         f'iter_N.pth inside the epoch, got exit {first.rc}, {saved}',
                         log_tail=tail(first.log))
            self.say(f'resume: {check["verdict"]}')
            return
        second = run_logged(cmd + ['--resume'], osp.join(self.work, 's1-resume.log'),
                            self.cap(STEP_CAPS['resume'] - first.wall_s), work_dir)
        log = open(second.log, errors='replace').read()
        continued = f'continuing epoch 1 after its first {saved[0]} of {epoch_len} batches' in log
        ok, details = compare_resume(ref, [r for _, r in second.scalars.train()], saved[0],
                                     exact=self.tiny)
        if second.rc != 0 or not continued:
            ok = False
            details['problems'].append(f'resumed run: exit {second.rc}, continued inside the '
                                       f'epoch: {continued}')
            check['log_tail'] = tail(second.log)
        check.update(details, ok=ok, saved_iteration=saved[0], wall_s=first.wall_s + second.wall_s,
                     verdict=('PASS' if ok else 'FAIL: ' + '; '.join(details['problems'])))
        self.say(f'resume: SIGUSR1 after iteration {first.signalled_at} -> iter_{saved[0]}.pth '
                 f'(exit {first.rc}); --resume -> {check["verdict"]} (LR max rel diff '
                 f'{details["lr_max_rel_diff"]:.1e}, loss mean |diff| '
                 f'{details["loss_mean_abs_diff"]:.3g} <= {details["loss_tolerance"]:.3g}?)')

    def det_checkpoint(self):
        return osp.join(self.work, 'runs', 's1', 'epoch_1.pth')

    def test(self):
        check = self.checks['test'] = dict(checkpoint=self.det_checkpoint())
        if not osp.exists(self.det_checkpoint()):
            check.update(ok=False, verdict='not run: no s1 checkpoint')
            return
        # a detector this young scores every box under the configs' 0.05: keep them all
        cmd = [sys.executable, osp.join(REPO, 'tools', 'test.py'),
               self.config_for(self.runs['s1']), self.det_checkpoint(),
               '--data-root', osp.join(self.data, 'labeled'), '--split', 'validation',
               '--work-dir', osp.join(self.work, 'runs', 'test'),
               '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0']
        p = run_logged(cmd, osp.join(self.work, 'test.log'),
                       self.cap(STEP_CAPS['test']))
        summary = [line.rstrip('\n') for line in open(p.log) if line.startswith(' Average ')]
        ok = p.rc == 0 and len(summary) == 12
        check.update(ok=ok, exit=p.rc, summary=summary, wall_s=p.wall_s,
                     verdict=(f'PASS: 12 summary lines, AP {summary[0].split("=")[-1].strip()}'
                              if ok else f'FAIL: exit {p.rc}, {len(summary)} summary lines'))
        if not ok:
            check['log_tail'] = tail(p.log)
        self.say(f'test.py: {check["verdict"]} ({p.wall_s:.0f} s)')
        print('\n'.join(summary), flush=True)

    def infer(self):
        check = self.checks['infer'] = dict(checkpoint=self.det_checkpoint())
        if not osp.exists(self.det_checkpoint()):
            check.update(ok=False, verdict='not run: no s1 checkpoint')
            return
        out_dir = osp.join(self.work, 'runs', 'infer')
        shutil.rmtree(out_dir, ignore_errors=True)
        num = 2 if self.tiny else 4
        cmd = [sys.executable, osp.join(REPO, 'tools', 'infer.py'),
               self.config_for(self.runs['s1']), self.det_checkpoint(),
               osp.join(self.data, 'labeled', 'validation', 'images'), '--num', str(num),
               '--out-dir', out_dir]
        p = run_logged(cmd, osp.join(self.work, 'infer.log'),
                       self.cap(STEP_CAPS['infer']))
        made = sorted(os.listdir(out_dir)) if osp.isdir(out_dir) else []
        pictures = [f for f in made if f.endswith('.png')]
        results = [f for f in made if f.endswith('.json')]
        ok = p.rc == 0 and len(pictures) == len(results) == num
        check.update(ok=ok, exit=p.rc, pictures=len(pictures), json=len(results),
                     wall_s=p.wall_s,
                     verdict=(f'PASS: {num} images drawn, {num} JSON' if ok else
                              f'FAIL: exit {p.rc}, {len(pictures)} pictures, {len(results)} JSON'))
        if not ok:
            check['log_tail'] = tail(p.log)
        self.say(f'infer.py: {check["verdict"]} ({p.wall_s:.0f} s)')

    # ------------------------------------------------------------------ report

    def report(self):
        import torch
        device = (subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version',
                                  '--format=csv,noheader'], capture_output=True,
                                 text=True).stdout.strip()
                  if shutil.which('nvidia-smi') else f'CPU ({os.cpu_count()} cores)')
        result = dict(mode='tiny' if self.tiny else 'gpu', device=device, torch=torch.__version__,
                      date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                      budget_s=self.args.budget_s, total_s=time.monotonic() - self.t0,
                      log_window=self.log_window, columns=COLUMNS,
                      runs=[self.rows.get(r.name, dict(run=r.name, config=r.config,
                                                       status='skipped: budget spent'))
                            for r in RUNS],
                      checks={k: self.checks.get(k, dict(ok=False, verdict='skipped: budget '
                                                         'spent'))
                              for k in ('resume', 'test', 'infer')})

        def fmt(v, spec):
            return 'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else \
                format(v, spec)

        lines = [f'# GPU day one ({result["mode"]})', '',
                 f'{device}, torch {result["torch"]}, {result["date"]}; {result["total_s"]:.0f} s '
                 f'of a {self.args.budget_s:.0f} s budget. Rates are means over logging windows '
                 f'of {self.log_window} iteration(s) after the first.', '',
                 '| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
        for r in result['runs']:
            util = r.get('gpu_util')
            lines.append('| ' + ' | '.join([
                r['run'], f'`{osp.basename(r["config"])}`', r.get('precision', ''),
                str(r.get('batch', '')),
                f'{r.get("iterations", 0)} / {r.get("planned_iterations", "")}',
                fmt(r.get('img_s'), '.1f'),
                fmt(r.get('data_wait', float('nan')) * 100, '.0f') + ('%' if 'data_wait' in r
                                                                     else ''),
                fmt(r.get('peak_gib'), '.2f'), fmt(util, '.0f') + ('%' if util is not None
                                                                  else ''),
                fmt(r.get('wall_s'), '.0f'), r.get('h200') or 'not measured',
                r['status']]) + ' |')
        lines += ['', '| check | verdict |', '|---|---|']
        lines += [f'| {k} | {c["verdict"]} |' for k, c in result['checks'].items()]
        if result['checks']['test'].get('summary'):
            lines += ['', '```text', *result['checks']['test']['summary'], '```']
        os.makedirs(self.out, exist_ok=True)
        with open(osp.join(self.out, 'gpu_day_one.md'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        with open(osp.join(self.out, 'gpu_day_one.json'), 'w') as f:
            json.dump(result, f, indent=1)
        print('\n'.join(lines), flush=True)
        print(f'wrote {osp.join(self.out, "gpu_day_one.md")} and .json', flush=True)
        return result

    def main(self):
        os.makedirs(self.work, exist_ok=True)
        self.plan()
        self.make_data()
        for name in ORDER:
            if not self.tiny and self.left() < MIN_START_S:
                self.say(f'{name}: skipped, {self.left():.0f} s of the budget left')
                continue
            if name in self.runs:
                self.train(self.runs[name])
            else:
                getattr(self, name)()
        result = self.report()
        ok = (all(r.get('status') == 'ok' for r in result['runs'])
              and all(c.get('ok') for c in result['checks'].values()))
        return 0 if ok else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--tiny', action='store_true',
                   help='CPU: a few iterations, tiny data, small wrapper configs, no --amp')
    p.add_argument('--work', default='work_dirs/gpu_day_one',
                   help='data, runs and logs (default: work_dirs/gpu_day_one)')
    p.add_argument('--out', help='folder for gpu_day_one.md/.json (default: $OUT, else --work)')
    p.add_argument('--budget-s', type=float, default=420,
                   help='seconds for everything after start (default 420: one 8-minute device '
                   'command with margin)')
    args = p.parse_args(argv)
    import torch
    if not args.tiny and not torch.cuda.is_available():
        p.error('no CUDA GPU visible: use --tiny for the CPU rehearsal')
    return DayOne(args).main()


if __name__ == '__main__':
    sys.exit(main())
