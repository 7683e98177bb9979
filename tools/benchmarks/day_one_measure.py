"""How gpu_day_one.py measures a step: a capped, logged subprocess with its scalars.json records
and nvidia-smi samples, the rates taken from them, and the resume-versus-uninterrupted check."""
import glob
import json
import os
import os.path as osp
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
POLL_S = 0.1


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
