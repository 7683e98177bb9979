import json
import os
import shutil
import sys
from collections import defaultdict

import pytest
from filelock import FileLock

from helpers import REPO, TESTS

# the helper modules beside this file, the repository's packages and its tools import by name
sys.path[:0] = [TESTS, REPO, os.path.join(REPO, 'tools')]

# A test that takes longer than this (setup, call and teardown) belongs to `make test`'s slow
# tier: mark it `slow`; the end of every run lists those that are not.
SLOW_SECONDS = 10
# The two-node cluster's modules run on one xdist worker: a two-node job takes both its nodes.
ONE_WORKER = ('slurm2',)
# The rehearsal's module is the longest group by far (its jobs train the real configs at real
# image sizes; its continuation job runs against Slurm's clock, then its reference trains): it
# starts first, and the other worker runs everything else beside it.
FIRST = 'rehearsal'


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """One xdist group per module (its module fixtures are built once), one for the two-node
    cluster's modules; the rehearsal's first, then groups with more slow tests first, so that
    the longest start first (`make test` passes --no-loadscope-reorder: workers take the groups
    in this order)."""
    modules = defaultdict(list)
    for item in items:
        modules[item.module.__name__].append(item)
    groups = defaultdict(list)
    for name, module_items in modules.items():
        used = set().union(*(item.fixturenames for item in module_items))
        groups[next((f for f in ONE_WORKER if f in used), name)] += module_items

    def weight(group):
        first = any(item.get_closest_marker(FIRST) for item in group[1])
        slow = sum(item.get_closest_marker('slow') is not None for item in group[1])
        return not first, -slow, -len(group[1])

    items[:] = []
    for name, group_items in sorted(groups.items(), key=weight):
        for item in group_items:
            item.add_marker(pytest.mark.xdist_group(name))
        items += group_items


_durations = defaultdict(float)
_marked_slow = set()


def pytest_runtest_logreport(report):
    nodeid = report.nodeid.split('@')[0]  # xdist appends @GROUP
    _durations[nodeid] += report.duration
    if 'slow' in report.keywords:
        _marked_slow.add(nodeid)


def pytest_sessionfinish(session, exitstatus):
    """A passed run's folder is removed (a failed run's stays until the next run)."""
    if exitstatus == 0 and not hasattr(session.config, 'workerinput'):
        basetemp = session.config._tmp_path_factory._basetemp
        if basetemp is not None:
            shutil.rmtree(basetemp, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    unmarked = sorted(((d, n) for n, d in _durations.items()
                       if d > SLOW_SECONDS and n not in _marked_slow), reverse=True)
    if unmarked:
        terminalreporter.section(f'over {SLOW_SECONDS} s without the slow marker')
        for seconds, nodeid in unmarked:
            terminalreporter.write_line(f'{seconds:7.1f} s  {nodeid}')


_tmp_path_key = pytest.StashKey[str]()
_failed_key = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        item.stash[_failed_key] = True
    if call.when == 'call' and 'tmp_path' in getattr(item, 'funcargs', {}):
        item.stash[_tmp_path_key] = str(item.funcargs['tmp_path'])
    return report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A passed test's ``tmp_path`` is emptied (the folders may be in RAM: the Makefile's
    TEST_TMPDIR) but stays, so that no later test of the process gets its path: a process-wide
    cache, such as the squashfs images a process opened, would take the new file at that path
    for the old one changed on disk."""
    yield
    tmp_path = item.stash.get(_tmp_path_key, None)
    if tmp_path and not item.stash.get(_failed_key, False):
        shutil.rmtree(tmp_path, ignore_errors=True)
        os.makedirs(tmp_path, exist_ok=True)


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / 'index-cache')


def _visualizers_dropped():
    """Each Visualizer class keeps its own dict (mmdet's DetLocalVisualizer too): every class's
    new entries go."""
    from mmengine.visualization import Visualizer

    def classes(cls=Visualizer):
        return [cls] + [c for sub in cls.__subclasses__() for c in classes(sub)]
    before = {cls: set(cls._instance_dict) for cls in classes()}
    yield
    for cls in classes():
        for name in set(cls._instance_dict) - before.get(cls, set()):
            del cls._instance_dict[name]


@pytest.fixture(autouse=True)
def _no_visualizer_left_behind():
    """mmengine hands hooks the newest Visualizer of a process-wide dict, and a runner reuses an
    existing name without making it the newest: a visualizer left by an earlier in-process runner
    would receive another test's detections."""
    yield from _visualizers_dropped()


@pytest.fixture(autouse=True, scope='module')
def _no_module_visualizer_left_behind():
    """The same for a module fixture's runner, which runs before any test's own fixtures: its
    visualizer (mmdet's configs name it 'visualizer') would be the one every later runner of the
    worker gets, writing into the module's folder after it was removed."""
    yield from _visualizers_dropped()


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


def run_folder(tmp_path_factory):
    """The folder of this pytest run that every xdist worker sees (each has its own below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


def build_once(tmp_path_factory, name, build):
    """``build(folder)`` once per run, by whichever xdist worker asks first; the others wait for
    it and get the same folder. Readers must not write into it (copy what a test changes)."""
    folder = run_folder(tmp_path_factory) / name
    with FileLock(f'{folder}.lock'):
        if not (folder / '.built').exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / '.built').touch()
    return folder


def shared_cluster(tmp_path_factory, name, **kw):
    """A Slurm cluster for the whole run: the first worker that asks starts it, every worker
    that asked holds it until its session ends, and the last one stops it."""
    from slurm_cluster import SlurmCluster, unavailable
    folder = run_folder(tmp_path_factory) / name
    users = folder.with_suffix('.json')
    with FileLock(f'{folder}.lock'):
        reason = unavailable()  # installs Debian's Slurm once, under the lock
        if reason:
            pytest.skip(f'Slurm tests skipped: {reason}')
        state = json.loads(users.read_text()) if users.exists() else dict(users=0)
        cluster = SlurmCluster(str(folder), **kw)
        if state['users']:
            cluster.procs = state['procs']
        else:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            state['procs'] = cluster.start().procs
        state['users'] += 1
        users.write_text(json.dumps(state))
    yield cluster
    with FileLock(f'{folder}.lock'):
        state = json.loads(users.read_text())
        state['users'] -= 1
        users.write_text(json.dumps(state))
        if not state['users']:
            cluster.stop()


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    """A small generated dataset in the real layout, shared by the tests that only read it."""
    from make_synthetic_data import make_dataset
    return str(build_once(tmp_path_factory, 'synthetic', lambda out: make_dataset(
        str(out), seed=0, num_unlabeled=16, num_train=24, num_val=12)))


@pytest.fixture(scope='session')
def moco_checkpoint(tmp_path_factory):
    """The demo MoCo (ResNet-50) as the runner saves it after 8 epochs, untrained but with
    BatchNorm statistics and affine parameters that differ per channel, so a hand-off that
    dropped them would show: ``(path, config path)``. Read-only."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    config = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py')

    def build(folder):
        cfg = Config.fromfile(config)
        init_default_scope(cfg.default_scope)
        torch.manual_seed(0)
        moco = MODELS.build(cfg.model)
        moco.init_weights()
        with torch.no_grad():
            for m in moco.backbone.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.momentum = None
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
            moco.backbone.train()
            moco.backbone(torch.rand(4, 3, 64, 64))
        torch.save(dict(meta=dict(epoch=8), state_dict=moco.state_dict()),
                   folder / 'epoch_8.pth')
    return str(build_once(tmp_path_factory, 'moco-checkpoint', build) / 'epoch_8.pth'), config


@pytest.fixture(scope='session')
def demo_detector(tmp_path_factory):
    """The demo detector config's model, untrained (random backbone), saved as tools/train.py
    saves its epoch 4: ``(path, config path)``. Read-only."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    config = os.path.join(REPO, 'configs/faster_rcnn/'
                          'faster-rcnn_r50-mocov2-pre_fpn_1xb4-demo-4e_synthetic.py')

    def build(folder):
        cfg = Config.fromfile(config)
        cfg.model.backbone.init_cfg = None
        init_default_scope('mmdet')
        torch.manual_seed(0)
        torch.save(dict(meta=dict(epoch=4), state_dict=MODELS.build(cfg.model).state_dict()),
                   folder / 'epoch_4.pth')
    return str(build_once(tmp_path_factory, 'demo-detector', build) / 'epoch_4.pth'), config


@pytest.fixture(scope='session')
def slurm(tmp_path_factory):
    """A one-node Slurm cluster shared by the Slurm test modules (see slurm_cluster.py), with the
    machine's CPUs once for each xdist worker, so that one worker's job never waits for the
    other's."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1))
    yield from shared_cluster(tmp_path_factory, 'cluster', cpus=(os.cpu_count() or 1) * workers)


@pytest.fixture(scope='session')
def slurm2(tmp_path_factory):
    """A two-node Slurm cluster (two slurmd on this machine, one CPU each) for the multi-node
    tests; its own daemons, ports, munge key and state folder, so it runs beside ``slurm``. Its
    tests run on one worker (a two-node job takes both nodes)."""
    yield from shared_cluster(tmp_path_factory, 'cluster2', nodes=2, cpus=1)


@pytest.fixture(scope='session')
def slurm_preempt(tmp_path_factory):
    """A one-node Slurm cluster of its own, 4 CPUs: a job in partition ``high`` preempts those in
    ``low`` (PreemptMode=REQUEUE) after a grace time of 5 s, in which Slurm signals the job's
    steps but not its batch script; and a Prolog that fails every launch while the file
    ``fail_launch`` (an attribute of the cluster) exists: Slurm then drains the node and holds
    the job. One module uses it."""
    folder = run_folder(tmp_path_factory)
    prolog, fail = folder / 'cluster-preempt.prolog', folder / 'cluster-preempt.fail-launch'
    prolog.write_text(f'#!/bin/sh\n! [ -e {fail} ]\n')
    prolog.chmod(0o755)
    for cluster in shared_cluster(tmp_path_factory, 'cluster-preempt', cpus=4, conf=f"""\
Prolog={prolog}
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=low Nodes=ALL PriorityTier=1 GraceTime=5 PreemptMode=REQUEUE OverSubscribe=NO
PartitionName=high Nodes=ALL PriorityTier=2 PreemptMode=OFF OverSubscribe=NO
"""):
        cluster.fail_launch = str(fail)
        yield cluster


@pytest.fixture
def signals_restored(monkeypatch):
    """The training loop's stop flag cleared and the SIGUSR1/SIGTERM handlers a test installs
    (in-process runners install the time-limit ones) put back afterwards."""
    import signal

    from custom_modules.engine.hooks import time_limit_hook
    monkeypatch.setattr(time_limit_hook, '_stop_requested', 0)
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture
def log_file(tmp_path):
    """A fresh current MMLogger writing to a file: print_log(logger='current') lands there."""
    import logging
    import uuid

    from mmengine.logging import MMLogger
    path = tmp_path / 'job.log'
    logger = MMLogger.get_instance(f'test-{uuid.uuid4().hex}', log_file=str(path))
    yield path
    for h in logger.handlers:
        if isinstance(h, logging.FileHandler):
            h.close()
