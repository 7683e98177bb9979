"""Fixtures of the Slurm test modules: one work folder per cluster for the whole run."""
import os
import sys

import pytest

from helpers import REPO, TESTS, write_sample
from slurm_jobs import (DET, DET_WRAPPER, MOCO_DEMO, MOCO_MULTINODE, MOCO_WRAPPER, SITECUSTOMIZE,
                        TWO_NODE_DET_EPOCHS)


@pytest.fixture(scope='session')
def two_node_env(tmp_path_factory, synthetic_root):
    """The two-node tests' folder: tiny labeled data, wrapper configs and the audit hook; the
    runs of each test go to work folders of their own under it."""
    root = tmp_path_factory.mktemp('multinode')
    labeled = str(root / 'labeled')
    for split, ids in (('training', (1, 2)), ('validation', (3, 4, 5, 6))):
        for i in ids:
            write_sample(labeled, split, i, size=(96, 64), labels=('dog', 'starfish'),
                         bboxes=((10, 8, 50, 40), (60, 30, 90, 60)))
    cfg_dir = root / 'configs'
    cfg_dir.mkdir()
    det = cfg_dir / 'det.py'
    det.write_text(DET_WRAPPER.format(
        base=os.path.join(REPO, 'configs', 'faster_rcnn', f'{DET}-s1-23e_labeled.py'),
        root=labeled, cache=str(root / 'index-cache'),
        extra=f'train_cfg = dict(max_epochs={TWO_NODE_DET_EPOCHS}, val_interval={TWO_NODE_DET_EPOCHS})'))
    moco = cfg_dir / 'moco.py'
    moco.write_text(MOCO_WRAPPER.format(
        base=os.path.join(REPO, 'configs', 'mocov2', f'{MOCO_DEMO}.py'),
        root=os.path.join(synthetic_root, 'unlabeled')) + MOCO_MULTINODE)
    audit_lib = root / 'audit-lib'
    audit_lib.mkdir()
    (audit_lib / 'sitecustomize.py').write_text(SITECUSTOMIZE)
    work_dirs = root / 'work_dirs'
    work_dirs.mkdir()
    proc_env = dict(os.environ, PYTHON=sys.executable, MN_AUDIT_ROOT=str(work_dirs),
                    PYTHONPATH=os.pathsep.join([str(audit_lib), REPO, TESTS,
                                                os.environ.get('PYTHONPATH', '')]))
    return dict(root=str(root), labeled=labeled, det=str(det), moco=str(moco),
                work_dirs=str(work_dirs), env=proc_env)
