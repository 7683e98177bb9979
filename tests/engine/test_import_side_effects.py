"""Importing custom_modules registers classes and two file backends ('atomic_local' and the
read-only 'sqsh' under its own 'sqsh://' prefix), and changes nothing else: no other file backend, no other library's logger, no stream, warning filter,
signal handler or environment variable (the tools quiet the console themselves)."""
import json

import pytest

from helpers import PY, run_tool


# Runs in a fresh interpreter. The libraries custom_modules builds on are imported first, so
# that what they do on import (their own loggers, warning filters) is in the "before" snapshot;
# everything that differs after `import custom_modules` is then that import's doing.
PROBE = r'''
import json, logging, os, signal, sys, warnings
import cv2, mmcv.cnn, mmcv.transforms, mmengine.runner, mmdet.datasets, mmdet.evaluation
import mmdet.models, mmpretrain.datasets, mmpretrain.engine, mmpretrain.models, terminaltables
from mmengine.fileio import backends as fileio_backends
from mmengine.fileio.file_client import FileClient
from mmengine.logging import MMLogger
from mmengine.registry import HOOKS
from mmdet.registry import DATASETS as DET_DATASETS, METRICS as DET_METRICS
from mmdet.registry import MODELS as DET_MODELS, TRANSFORMS as DET_TRANSFORMS

REGISTRIES = dict(hooks=HOOKS, det_datasets=DET_DATASETS, det_metrics=DET_METRICS,
                  det_models=DET_MODELS, det_transforms=DET_TRANSFORMS)


def handler(h):
    return [id(h), type(h).__name__, h.level, [id(f) for f in h.filters], id(h.formatter),
            id(getattr(h, 'stream', None))]


def logger(lg):
    return dict(level=lg.level, propagate=lg.propagate, disabled=lg.disabled,
                filters=[id(f) for f in lg.filters], handlers=[handler(h) for h in lg.handlers])


def snapshot():
    loggers = {name: logger(lg) for name, lg in logging.root.manager.loggerDict.items()
               if isinstance(lg, logging.Logger)}
    loggers['<root>'] = logger(logging.root)
    return dict(
        backends={k: repr(v) for k, v in fileio_backends.backends.items()},
        prefixes={k: repr(v) for k, v in fileio_backends.prefix_to_backends.items()},
        file_client={k: repr(v) for k, v in FileClient._backends.items()},
        file_client_prefixes={k: repr(v) for k, v in FileClient._prefix_to_backends.items()},
        loggers=loggers,
        mmloggers=sorted(MMLogger._instance_dict),
        streams=[id(sys.stdout), id(sys.stderr), id(sys.stdin)],
        warnings=repr(warnings.filters),
        signals={s.name: repr(signal.getsignal(s)) for s in signal.valid_signals()
                 if isinstance(s, signal.Signals)},
        environ=dict(os.environ),
        registered={k: sorted(r.module_dict) for k, r in REGISTRIES.items()},
    )


before = snapshot()
import custom_modules  # noqa: E402,F401
after = snapshot()
print('SNAPSHOTS ' + json.dumps(dict(before=before, after=after)))
'''


@pytest.mark.slow
def test_importing_custom_modules_changes_nothing_but_the_registries():
    r = run_tool(PY, '-c', PROBE, timeout=300, check=True)
    line = next(x for x in r.stdout.splitlines() if x.startswith('SNAPSHOTS '))
    snaps = json.loads(line[len('SNAPSHOTS '):])
    before, after = snaps['before'], snaps['after']

    # the file backends: two added under their own names, one prefix added ('sqsh'); 'local'
    # and the '' prefix untouched
    added = {k: v for k, v in after['backends'].items() if k not in before['backends']}
    assert sorted(added) == ['atomic_local', 'sqsh']
    assert 'AtomicLocalBackend' in added['atomic_local'] and 'SquashfsBackend' in added['sqsh']
    assert {k: after['backends'][k] for k in before['backends']} == before['backends']
    new_prefixes = {k: v for k, v in after['prefixes'].items() if k not in before['prefixes']}
    assert list(new_prefixes) == ['sqsh'] and 'SquashfsBackend' in new_prefixes['sqsh']
    assert 'LocalBackend' in before['prefixes'][''] and (
        {k: after['prefixes'][k] for k in before['prefixes']} == before['prefixes'])
    assert after['file_client'] == before['file_client']
    assert after['file_client_prefixes'] == before['file_client_prefixes']

    # other libraries' loggers and handlers as they were; a logger first created by the import
    # (a module's getLogger) has no handler, filter or level of its own
    for name, state in before['loggers'].items():
        assert after['loggers'][name] == state, name
    for name in set(after['loggers']) - set(before['loggers']):
        assert after['loggers'][name] == dict(level=0, propagate=True, disabled=False,
                                              filters=[], handlers=[]), name
    assert after['mmloggers'] == before['mmloggers']

    for key in ('streams', 'warnings', 'signals', 'environ'):
        assert after[key] == before[key], key

    # ... and the registries gained our classes
    expected = dict(hooks={'EpochSeedHook', 'FiniteLossHook', 'KeepCheckpointHook',
                           'OwnBestCheckpointHook', 'TimeLimitHook'},
                    det_datasets={'LabeledDetDataset'}, det_metrics={'SeedCocoMetric'},
                    det_models={'SimpleFeaturePyramid', 'WindowedViT'},
                    det_transforms={'LoadImageNamed'})
    for registry, names in expected.items():
        gained = set(after['registered'][registry]) - set(before['registered'][registry])
        assert names <= gained, registry
