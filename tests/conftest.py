import os
import shutil
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tools'))


def write_sample(root, split, img_id, size=(64, 48), bboxes=((4, 5, 30, 40),), labels=('dog',),
                 image_size=True, mode='RGB', label_doc=None):
    """One image + yml in the course layout; ``label_doc`` overrides the yml text."""
    img_dir = os.path.join(root, split, 'images')
    label_dir = os.path.join(root, split, 'labels')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    img_path = os.path.join(img_dir, f'{img_id}.JPEG')
    if size is not None:
        rng = np.random.default_rng(img_id)
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(img_path, format='JPEG')
    label_path = os.path.join(label_dir, f'{img_id}.yml')
    if label_doc is None:
        doc = dict(bboxes=[list(b) for b in bboxes], labels=list(labels))
        if image_size:
            doc['image_size'] = list(size)
        label_doc = yaml.safe_dump(doc)
    if label_doc is not False:
        with open(label_path, 'w') as f:
            f.write(label_doc)
    return img_path, label_path


def write_tiny_labeled(root):
    """Two training images and one validation image, two objects each, in the course layout."""
    for split, ids in (('training', (1, 2)), ('validation', (3, ))):
        for i in ids:
            write_sample(root, split, i, size=(96, 64), bboxes=((10, 8, 50, 40), (60, 30, 90, 60)),
                         labels=('dog', 'starfish'))
    return root


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / 'index-cache')


@pytest.fixture(autouse=True)
def _no_visualizer_left_behind():
    """mmengine hands hooks the newest Visualizer of a process-wide dict, and a runner reuses an
    existing name without making it the newest: a visualizer left by an earlier in-process runner
    would receive another test's detections."""
    from mmengine.visualization import Visualizer
    before = set(Visualizer._instance_dict)
    yield
    for name in set(Visualizer._instance_dict) - before:
        del Visualizer._instance_dict[name]


@pytest.fixture(scope='module')
def module_tmp(request, tmp_path_factory):
    """``tmp_path_factory.mktemp`` for a module's fixtures, removed when the module ends without
    a failure: the trained checkpoints of all modules together would need tens of GB of /tmp."""
    made = []
    failed_before = request.session.testsfailed

    def mktemp(name):
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == failed_before:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    """A small generated dataset in the real layout, shared by the tests that only read it."""
    from make_synthetic_data import make_dataset
    out = tmp_path_factory.mktemp('synthetic')
    make_dataset(str(out), seed=0, num_unlabeled=16, num_train=24, num_val=12)
    return str(out)


@pytest.fixture(scope='session')
def slurm(tmp_path_factory):
    """A one-node Slurm cluster shared by the Slurm test modules (see slurm_cluster.py)."""
    from slurm_cluster import SlurmCluster, unavailable
    reason = unavailable()
    if reason:
        pytest.skip(f'Slurm tests skipped: {reason}')
    cluster = SlurmCluster(str(tmp_path_factory.mktemp('cluster'))).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope='session')
def slurm2(tmp_path_factory):
    """A two-node Slurm cluster (two slurmd on this machine, one CPU each) for the multi-node
    tests; its own daemons, ports, munge key and state folder, so it runs beside ``slurm``."""
    from slurm_cluster import SlurmCluster, unavailable
    reason = unavailable()
    if reason:
        pytest.skip(f'Slurm tests skipped: {reason}')
    cluster = SlurmCluster(str(tmp_path_factory.mktemp('cluster2')), nodes=2, cpus=1).start()
    yield cluster
    cluster.stop()
