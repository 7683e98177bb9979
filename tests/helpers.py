"""What the test modules share: the repository's paths, running a tool as a user runs it, the
writers of tiny labeled data and the demo configs' proposal counts. Plain functions, imported by
name (fixtures live in conftest.py)."""
import importlib.util
import os
import signal
import subprocess
import sys

import numpy as np
import yaml
from mmengine.hooks import Hook
from PIL import Image

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
PY = sys.executable


def tool_path(name: str) -> str:
    """``tools/NAME`` unless NAME is absolute or a program on PATH (sbatch, bash)."""
    if os.path.isabs(name) or os.sep not in name and not name.endswith(('.py', '.sh', '.sbatch')):
        return name
    return os.path.join(REPO, 'tools', name)


def load_file(rel: str, name: str):
    """The repository file ``rel`` (e.g. ``tools/install/uv_args.py``) imported as module
    ``name``, for tests of its functions; registered in sys.modules, where a @dataclass in it
    looks its module up."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, rel))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_tool(name, *args, cwd=REPO, env=None, timeout=600, check=False, **kwargs):
    """Run a tool as a user does: ``tools/NAME.py`` with this venv's Python, ``.sh`` and
    ``.sbatch`` scripts directly, anything else as given. Returns the CompletedProcess (exit
    status, stdout and stderr as text); ``check`` asserts exit status 0 and shows the output's
    tail when it is not."""
    path = tool_path(name)
    cmd = [PY, path, *args] if path.endswith('.py') else [path, *args]
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout, **kwargs)
    if check:
        assert r.returncode == 0, f'{name} exited {r.returncode}:\n' \
            f'{r.stdout[-2000:]}\n{r.stderr[-4000:]}'
    return r


def counted_python(path, log) -> str:
    """An executable at ``path`` that appends one line per start (``python ARGS``) to ``log`` and
    runs this Python: given as PYTHON, it counts a launcher's Python starts."""
    with open(path, 'w') as f:
        f.write(f'#!/usr/bin/env bash\necho "python $*" >> {log}\nexec {PY} "$@"\n')
    os.chmod(path, 0o755)
    return str(path)


def demo_proposals() -> dict:
    """The demo configs' proposal and RoI counts (configs/_base_/synthetic_demo.py) as a ``model``
    override: what the real detector configs take on the tests' tiny images, which hold a box or
    two (their 2000 proposals and 512 RoIs make an iteration 2.6 times slower)."""
    from mmengine.config import Config
    demo = Config.fromfile(os.path.join(REPO, 'configs', '_base_', 'synthetic_demo.py'))
    return demo.demo_proposals.to_dict()


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


class SignalBeforeIter(Hook):
    """A hook (register it in mmengine's HOOKS) that sends ``signum`` to this process before the
    training iteration ``at``: Slurm's time-limit signal at a known place."""

    def __init__(self, at, signum=signal.SIGUSR1):
        self.at, self.signum = at, signum

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            os.kill(os.getpid(), self.signum)
