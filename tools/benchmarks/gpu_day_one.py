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
import json
import math
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

# the sibling modules: run as a script this folder is on sys.path already, loaded from its path
# (tests/tools/test_gpu_day_one.py) it is not
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from day_one_measure import REPO, compare_resume, run_logged, tail, train_stats  # noqa: E402
from day_one_runs import (COLUMNS, MIN_START_S, ORDER, RUNS, STEP_CAPS,  # noqa: E402
                          TINY_WRAPPERS)

sys.path.insert(0, osp.join(REPO, 'tools'))
from make_synthetic_data import CLASS_STYLES, make_dataset  # noqa: E402

EXIT_TIME_LIMIT = 75  # custom_modules/engine/hooks/time_limit_hook.py: a run stopped by SIGUSR1


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
