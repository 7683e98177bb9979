"""tools/benchmarks/gpu_day_one.sh, the script a GPU machine runs on its first day, in its CPU
rehearsal (--tiny) end to end: the real configs (through small wrappers) trained through
tools/train.py with the pretraining -> detection hand-offs, the SIGUSR1 stop and --resume
compared with the uninterrupted run, tools/test.py's 12 summary lines, tools/infer.py, and the
table it writes. About two minutes on 2 cores."""
import json
import os
import sys

import pytest
from helpers import REPO, load_file, run_tool

SCRIPT = os.path.join(REPO, 'tools', 'benchmarks', 'gpu_day_one.sh')
RUNS = ['mocov2', 'densecl', 'mae', 's1', 'ssl', 'vit-s1', 'vitdet']
TINY_ITERS = {'mocov2': 2, 'densecl': 2, 'mae': 2, 's1': 4, 'ssl': 2, 'vit-s1': 2, 'vitdet': 2}


def driver():
    return load_file('tools/benchmarks/gpu_day_one.py', 'gpu_day_one')


@pytest.fixture(scope='module')
def day_one(module_tmp):
    work = module_tmp('day_one')
    out = work / 'out'
    env = dict(os.environ, PY=sys.executable, XDG_CACHE_HOME=str(work / 'cache'))
    env.pop('OUT', None)
    r = run_tool(SCRIPT, '--tiny', '--work', work, '--out', out, env=env, cwd=str(work),
                 timeout=900)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
    assert sorted(os.listdir(out)) == ['gpu_day_one.json', 'gpu_day_one.md']
    return dict(work=work, stdout=r.stdout, result=json.loads((out / 'gpu_day_one.json').read_text()),
                table=(out / 'gpu_day_one.md').read_text())


@pytest.mark.slow
def test_every_recipe_trains_and_is_measured(day_one):
    result = day_one['result']
    assert result['mode'] == 'tiny' and 'plan (tiny, CPU)' in day_one['stdout']
    assert [r['run'] for r in result['runs']] == RUNS
    for r in result['runs']:
        assert r['status'] == 'ok' and r['rc'] == 0, r
        assert r['iterations'] == r['planned_iterations'] == TINY_ITERS[r['run']], r
        assert r['batch'] == 2 and r['precision'] == 'fp32'  # no --amp on CPU
        assert r['img_s'] > 0 and 0 <= r['data_wait'] <= 1, r
        assert r['peak_gib'] is None and r['gpu_util'] is None  # no GPU: reported as n/a
    # the detectors started from the pretraining runs' checkpoints
    for name, source in (('s1', 'mocov2'), ('ssl', 'mocov2'), ('vit-s1', 'mae'),
                         ('vitdet', 'mae')):
        log = (day_one['work'] / f'{name}.log').read_text()
        ckpt = day_one['work'] / 'runs' / source / 'keep_epoch_1.pth'
        assert f'--pretrained {ckpt}: ' in log, log[-3000:]


def cells(line):
    return [c.strip() for c in line.strip().strip('|').split('|')]


@pytest.mark.slow
def test_table_has_every_row_and_column(day_one):
    lines = day_one['table'].splitlines()
    columns = list(day_one['result']['columns'])
    header = [i for i, line in enumerate(lines) if line.startswith('| run |')]
    assert len(header) == 1 and cells(lines[header[0]]) == columns
    rows = {cells(line)[0]: dict(zip(columns, cells(line)))
            for line in lines[header[0] + 2:header[0] + 2 + len(RUNS)]}
    assert list(rows) == RUNS
    for name, row in rows.items():
        assert len(row) == len(columns) and row['status'] == 'ok', row
        assert row['iterations'] == f'{TINY_ITERS[name]} / {TINY_ITERS[name]}'
        assert float(row['img/s (with data)']) > 0 and row['waiting for data'].endswith('%')
        assert row['peak GPU memory (GiB)'] == row['GPU util'] == 'n/a'
    checks = dict(cells(line) for line in lines
                  if line.startswith(('| resume |', '| test |', '| infer |')))
    assert list(checks) == ['resume', 'test', 'infer']
    assert all(v.startswith('PASS') for v in checks.values()), checks


@pytest.mark.slow
def test_sigusr1_mid_epoch_then_resume_matches_the_uninterrupted_run(day_one):
    check = day_one['result']['checks']['resume']
    assert check['ok'] and check['verdict'] == 'PASS', check
    assert check['exit'] == 75 and check['epoch_iterations'] == TINY_ITERS['s1']
    assert check['saved_iterations'] == [check['saved_iteration']]
    assert check['signal_after_iteration'] < check['saved_iteration'] < TINY_ITERS['s1']
    # on CPU the resume replays exactly: equal losses and LRs, every record after the stop
    assert check['loss_tolerance'] == 0 and check['loss_mean_abs_diff'] == 0
    assert check['lr_max_rel_diff'] == 0
    assert check['compared_records'] == TINY_ITERS['s1'] - check['saved_iteration']


@pytest.mark.slow
def test_test_py_prints_the_12_line_summary_and_infer_draws(day_one):
    test = day_one['result']['checks']['test']
    assert test['ok'] and test['exit'] == 0
    summary = test['summary']
    assert len(summary) == 12
    assert all(s.startswith(' Average Precision ') for s in summary[:6])
    assert all(s.startswith(' Average Recall ') for s in summary[6:])
    assert all(s in day_one['table'] for s in summary)
    infer = day_one['result']['checks']['infer']
    assert infer['ok'] and infer['pictures'] == infer['json'] == 2


def test_the_resume_comparison_fails_a_wrong_resume():
    """compare_resume passes only a resume that continues the same curve."""
    compare = driver().compare_resume

    def records(offset=0, noise=0.0):
        # a linear warm-up LR and a falling, bumpy loss, as detection's first iterations
        return [dict(iter=i, lr=0.015 * (1e-3 + 0.999 * (i + offset) / 1000),
                     loss=3.0 - 0.01 * (i + offset) + 0.2 * ((i + offset) % 3) + noise)
                for i in range(10, 210, 10)]

    ref = records()
    assert compare(ref, [r for r in ref if r['iter'] > 50], 53, exact=True)[0]
    # GPU: last-bit differences pass, the loss's own record-to-record change does not
    assert compare(ref, [r for r in records(noise=0.001) if r['iter'] > 50], 53, exact=False)[0]
    assert not compare(ref, [r for r in records(noise=0.001) if r['iter'] > 50], 53,
                       exact=True)[0]
    ok, details = compare(ref, [r for r in records(offset=10) if r['iter'] > 50], 53, exact=False)
    assert not ok and any('LR' in p for p in details['problems'])
    assert any('loss' in p for p in details['problems'])
    assert not compare(ref, [r for r in ref if 50 < r['iter'] < 200], 53, exact=True)[0]
    assert not compare(ref, [], 53, exact=True)[0]
