"""A user's mistakes end in one `error: ...` line naming the fix and exit status 2, before any
runner is built (a data file's content: when it is read): no traceback, no config dump."""
import os

import pytest
import torch
from helpers import REPO, run_tool

DEMO = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_1xb4-demo-4e_synthetic.py')
MOCO = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py')
SCRATCH = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-scratch_fpn_1xb4-demo-4e_synthetic.py')


def assert_one_line_error(r, *words):
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, r.stderr[-2000:]
    assert 'Traceback' not in r.stderr + r.stdout
    assert 'Config:' not in r.stdout  # failed before the runner dumped anything
    assert 'OneDL' not in r.stdout + r.stderr  # the tools drop mmdet's optional-package notice
    for w in words:
        assert w in errors[0], errors[0]


@pytest.fixture(scope='module')
def files(module_tmp):
    """A file of each kind the tools tell apart (only their keys matter to the checks)."""
    d = module_tmp('ckpts')
    det, moco = str(d / 'det.pth'), str(d / 'moco.pth')
    torch.save(dict(state_dict={'backbone.conv1.weight': torch.zeros(1),
                                'rpn_head.rpn_cls.weight': torch.zeros(1)}), det)
    torch.save(dict(state_dict={'backbone.conv1.weight': torch.zeros(1),
                                'momentum_encoder.conv1.weight': torch.zeros(1),
                                'queue': torch.zeros(1)}), moco)
    return dict(det=det, moco=moco)


def test_test_py_unknown_split(synthetic_root, files):
    r = run_tool('test.py', DEMO, files['det'], '--data-root',
                 os.path.join(synthetic_root, 'labeled'), '--split', 'val')
    assert_one_line_error(r, "no split folder 'val'", 'training, validation', '--split')


def test_test_py_given_a_moco_checkpoint(synthetic_root, files):
    r = run_tool('test.py', DEMO, files['moco'], '--data-root', os.path.join(synthetic_root, 'labeled'))
    assert_one_line_error(r, 'backbone-only checkpoint', '--pretrained')


def test_test_py_best_of_folders_without_best_files(tmp_path):
    r = run_tool('test.py', DEMO, '--best-of', str(tmp_path))
    assert_one_line_error(r, 'no best_*.pth', 'epoch_N.pth')


@pytest.mark.skipif(torch.cuda.is_available(), reason='the mistake is --amp without a GPU')
@pytest.mark.parametrize('name', ['train.py', 'test.py'])
def test_amp_without_gpu(name, synthetic_root, files, tmp_path):
    args = ([MOCO, '--data-root', os.path.join(synthetic_root, 'unlabeled')] if name == 'train.py'
            else [DEMO, files['det']])
    r = run_tool(name, *args, '--amp', '--work-dir', str(tmp_path / 'w'))
    assert_one_line_error(r, '--amp', 'run without --amp')


@pytest.mark.slow
def test_train_py_missing_data_folder(tmp_path):
    r = run_tool('train.py', MOCO, '--work-dir', str(tmp_path / 'w'), cwd=str(tmp_path))
    assert_one_line_error(r, "'data/synthetic/unlabeled'", '--data-root DIR')


@pytest.mark.slow
def test_train_py_detector_checkpoint_as_pretrained(synthetic_root, files, tmp_path):
    r = run_tool('train.py', DEMO, '--data-root', os.path.join(synthetic_root, 'labeled'),
                 '--pretrained', files['det'], '--work-dir', str(tmp_path / 'w'))
    assert_one_line_error(r, '--backbone-from-detector')


@pytest.mark.slow
def test_a_bad_label_file_stops_train_py_with_one_line(synthetic_root, tmp_path):
    """A label file that cannot be read without guessing (here invalid YAML) is the user's data
    to fix: train.py names it in one error line, as tools/check_dataset.py does."""
    import shutil
    labeled = tmp_path / 'labeled'
    shutil.copytree(os.path.join(synthetic_root, 'labeled'), labeled)
    label = labeled / 'training' / 'labels' / sorted(os.listdir(labeled / 'training' / 'labels'))[0]
    label.write_text('bboxes: [[1, 2\n')
    r = run_tool('train.py', SCRATCH, '--data-root', str(labeled), '--work-dir', str(tmp_path / 'w'),
                 '--cfg-options', 'train_cfg.max_epochs=1')
    errors = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
    assert r.returncode == 2 and len(errors) == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert 'Traceback' not in r.stderr + r.stdout
    assert f'{label}: invalid YAML' in errors[0], errors[0]
