"""tools/toolkit/console.py and SeedCocoMetric: the terminal shows progress, warnings that need
action and results; dumps and known no-action messages go to the log file only."""
import csv
import logging
import os
import subprocess
import sys
import time
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger, print_log
from mmengine.model import BaseModel

from toolkit import console
from custom_modules.evaluation.seed_coco_metric import SeedCocoMetric
from custom_modules.datasets.classes import LABELED_CLASSES
from helpers import PY, REPO, run_tool


@pytest.fixture
def fresh_logger():
    """Forget the MMLoggers a test creates: their console handlers hold pytest's capture
    stream, which is closed after the test."""
    before = set(MMLogger._instance_dict)
    yield
    for name in set(MMLogger._instance_dict) - before:
        for h in MMLogger._instance_dict.pop(name).handlers:
            h.close()


class _Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(1, 1)

    def forward(self, inputs=None, data_samples=None, mode='tensor'):
        return self.fc(inputs)


@pytest.mark.parametrize('verbose', [False, True])
def test_quiet_runner_console_drops_dumps_and_known_warnings(tmp_path, capsys, fresh_logger,
                                                             verbose):
    from mmdet.evaluation import DumpDetResults
    from mmengine.fileio.file_client import FileClient, HardDiskBackend
    console.set_verbose(verbose)
    try:
        # a real Runner.__init__ logs the real environment, config and hook dumps
        runner = console.QuietRunner(model=_Toy(), work_dir=str(tmp_path),
                                     experiment_name=f'console-{uuid.uuid4().hex}',
                                     cfg=Config(dict(marker_option=1)))
        # the upstream calls that log the no-action warnings, through the 'current' logger
        FileClient(backend='disk')
        HardDiskBackend()  # FileClient builds it once per process: call it directly
        DumpDetResults(out_file_path=str(tmp_path / 'x.pkl'))
        # what must stay: progress and a warning that does need action
        print_log('Epoch(train) [1][1/1]  eta: 0:00:01  loss: 1.2345', logger='current')
        print_log('The prefix is not set in metric class MyMetric.', logger='current',
                  level=logging.WARNING)
    finally:
        console.set_verbose(False)
    out = capsys.readouterr().out
    with open(runner.logger.log_file) as f:
        log = f.read()
    dropped = ['System environment:', 'Runtime environment:', 'marker_option = 1',
               'Hooks will be executed in the following order', 'all SyncBatchNorm',
               '"FileClient" will be deprecated', '"HardDiskBackend" is the alias',
               'metric class DumpDetResults.']
    kept = ['loss: 1.2345', 'metric class MyMetric.']
    for text in dropped + kept:
        assert text in log, text  # the file keeps everything
    for text in dropped:
        assert (text in out) == verbose, text  # --verbose shows it all
    for text in kept:
        assert text in out, text


def test_drop_lines_passes_everything_else(capsys):
    # quiet_imports' stdout filter: only lines starting with the prefix go, partial lines too
    stream = console._DropLines(sys.stdout, ('Could not import OneDL', ))
    stream.write('keep 1\nCould not import OneDL. Skipping OneDL datasets.\nkeep ')
    stream.write('2\nCould not import OneDL')
    stream.write('\nno newline')
    stream.flush()
    assert capsys.readouterr().out == 'keep 1\nkeep 2\nno newline'


@pytest.mark.slow
def test_quiet_imports_hides_the_onedl_line_in_a_fresh_interpreter():
    # a fresh interpreter: the line is printed only at the first import of each module. The
    # tools start with the bootstrap, then import custom_modules.
    code = ('import sys; sys.path.insert(0, "tools"); '
            'from toolkit import bootstrap; bootstrap.setup(); '
            'import custom_modules, mmdet.datasets, mmdet.datasets.transforms, '
            'mmpretrain.datasets; '
            'print("after")')
    r = run_tool(PY, '-c', code, timeout=300, check=True)
    assert 'OneDL' not in r.stdout + r.stderr, r.stdout
    assert r.stdout.splitlines()[-1] == 'after'  # and stdout is not left redirected


@pytest.mark.parametrize('tool', ['check_dataset.py', 'model_converters/mae_to_mmpretrain.py',
                                  'model_converters/mocov2_to_torchvision.py',
                                  'model_converters/torchvision_frcnn_to_mmdet.py'])
def test_tools_that_import_custom_modules_at_start_print_no_onedl_line(tool):
    # (tools/train.py and tools/test.py: tests/tools/test_user_errors.py)
    r = run_tool(tool, '--help', timeout=300)
    assert r.returncode == 0 and r.stdout.startswith('usage: '), r.stderr[-3000:]
    assert 'OneDL' not in r.stdout + r.stderr, r.stdout


def _sample(img_id, gt, gt_labels, pred, scores, labels):
    return dict(img_id=img_id, ori_shape=(100, 120),
                gt_instances=dict(bboxes=torch.tensor(gt, dtype=torch.float32),
                                  labels=torch.tensor(gt_labels)),
                pred_instances=dict(bboxes=torch.tensor(pred, dtype=torch.float32),
                                    scores=torch.tensor(scores), labels=torch.tensor(labels)))


def test_classwise_shows_classes_with_gt_and_saves_all(tmp_path, capsys, fresh_logger):
    (tmp_path / 'run').mkdir()
    logger = MMLogger.get_instance(f'console-{uuid.uuid4().hex}',
                                   log_file=str(tmp_path / 'run' / 'run.log'))
    metric = SeedCocoMetric(metric='bbox', proposal_nums=(1, 10, 100), classwise=True)
    metric.dataset_meta = dict(classes=LABELED_CLASSES)
    # classes 3 and 7 have ground truth; 7 is found, 3 is missed; 50 is only predicted
    metric.process({}, [
        _sample(1, [[10, 10, 60, 60]], [7],
                [[10, 10, 60, 60], [0, 0, 30, 30]], [0.9, 0.8], [7, 50]),
        _sample(2, [[20, 20, 90, 80], [5, 5, 40, 40]], [3, 7], [[5, 5, 40, 40]], [0.9], [7]),
    ])
    metrics = metric.evaluate(2)
    out = capsys.readouterr().out
    # the 12-line summary in pycocotools' format on stdout (no faster-coco-eval extras)
    summary = [line for line in out.splitlines() if line.startswith(' Average ')]
    assert len(summary) == 12, out
    assert summary[0].startswith(' Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | '
                                 'maxDets=100 ] = ')
    # the console table: the two classes with ground truth, not the 98 others
    names = {k: LABELED_CLASSES[k] for k in (3, 7, 50, 0)}
    rows = [line for line in out.splitlines() if line.startswith('| ')]
    assert [r.split('|')[1].strip() for r in rows[1:]] == [names[3], names[7]], out
    assert sorted(k for k in metrics if k.endswith('_precision')) == sorted(
        f'coco/{names[k]}_precision' for k in (3, 7))
    assert metrics[f'coco/{names[7]}_precision'] == 1.0
    # the full table beside the log file, its path shown
    path = str(tmp_path / 'run' / 'classwise_ap.csv')
    assert path in out
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert [r['category'] for r in table] == list(LABELED_CLASSES)
    by_name = {r['category']: r for r in table}
    assert by_name[names[7]]['gt_boxes'] == '2' and float(by_name[names[7]]['mAP']) == 1.0
    assert by_name[names[3]]['gt_boxes'] == '1' and float(by_name[names[3]]['mAP']) == 0.0
    assert by_name[names[50]]['gt_boxes'] == '0' and by_name[names[50]]['mAP'] == 'nan'
    assert 'classwise_ap.csv' in open(logger.log_file).read()


@pytest.mark.slow
def test_tools_test_py_terminal_output_is_short(synthetic_root, demo_detector, tmp_path):
    """A new user's evaluation of the demo detector: the 12-line summary and what was evaluated,
    not the environment, config and hook dumps (they stay in the log file)."""
    ckpt, demo = demo_detector
    r = run_tool('test.py', demo, ckpt, '--data-root', os.path.join(synthetic_root, 'labeled'),
                 '--work-dir', tmp_path / 'w', '--cfg-options',
                 'model.test_cfg.rcnn.score_thr=0.0', check=True)
    terminal = (r.stdout + r.stderr).splitlines()
    assert len(terminal) <= 40, '\n'.join(terminal)
    assert sum(line.startswith(' Average ') for line in terminal) == 12
    assert not [line for line in terminal if 'OneDL' in line or 'Config:' in line]
    log = open(next(os.path.join(d, f) for d, _, fs in os.walk(tmp_path / 'w') for f in fs
                    if f.endswith('.log'))).read()
    assert 'System environment' in log and 'Config:' in log  # kept for the record


def test_a_config_text_is_formatted_once_and_follows_changes(monkeypatch):
    """The runner reads Config.pretty_text at its start and in every checkpoint; the tools format
    each text once per process (bootstrap.setup), and a changed config gives its new text."""
    from yapf.yapflib import reformatter
    from toolkit import bootstrap
    bootstrap.setup(quiet=False)
    calls = []
    original = reformatter.Reformat
    monkeypatch.setattr(reformatter, 'Reformat',
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    cfg = Config(dict(model=dict(type='Toy', depth=50), seed=int(uuid.uuid4().int % 1000)))
    first = cfg.pretty_text
    ran = len(calls)
    assert ran and all(cfg.pretty_text == first for _ in range(3)) and len(calls) == ran
    assert "depth=50" in first
    cfg.model.depth = 101
    assert 'depth=101' in cfg.pretty_text and len(calls) > ran


def test_the_first_yapf_import_waits_for_a_process_writing_its_grammar(tmp_path):
    """yapf writes its grammar tables into its cache folder on its first import, without an
    atomic rename: a tool imports it under a lock there (bootstrap.setup), so two ranks starting
    at once where the cache is new do not read a half-written file. Here the lock is held
    while a tool starts: it writes nothing until the lock is free, then the tables."""
    from filelock import FileLock
    cache = tmp_path / 'cache'
    (cache / 'YAPF').mkdir(parents=True)
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    code = ('import sys; sys.path.insert(0, "tools"); from toolkit import bootstrap; '
            'bootstrap.setup(quiet=False)')
    with FileLock(str(cache / 'YAPF' / 'import.lock')):
        proc = subprocess.Popen([PY, '-c', code], cwd=REPO, env=env, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(3)  # the import alone takes well under a second
        assert proc.poll() is None and not list(cache.rglob('*.pickle'))
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert sorted(p.name.split('-')[0] for p in cache.rglob('*.pickle')) == ['Grammar',
                                                                              'PatternGrammar']


def test_a_tool_starts_where_yapf_cannot_write_its_cache(tmp_path):
    """A cache folder that cannot be made (a read-only home, here a file in its place): no lock,
    and the tool starts all the same, as yapf does without its cache."""
    blocked = tmp_path / 'not-a-folder'
    blocked.write_text('')
    code = ('import sys; sys.path.insert(0, "tools"); from toolkit import bootstrap; '
            'bootstrap.setup(quiet=False); from yapf.yapflib import yapf_api; '
            'print(yapf_api.FormatCode("x  =  1")[0], end="")')
    env = dict(os.environ, XDG_CACHE_HOME=str(blocked))
    r = subprocess.run([PY, '-c', code], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout == 'x = 1\n', r.stderr[-3000:]
