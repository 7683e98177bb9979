"""Every config loads, and builds its model and datasets (pretrained init disabled)."""
import glob
import importlib
import os

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope
from mmengine.registry import DATASETS, MODELS

from toolkit.config_edits import (UNLABELED_TYPES, dataloader_datasets, set_data_root,
                                  set_unlabeled_root)
from helpers import REPO

CONFIG_DIR = os.path.join(REPO, 'configs')
# configs/_base_/ holds pieces that configs list in their `_base_`, not configs to run
CONFIGS = sorted(p for p in glob.glob(os.path.join(CONFIG_DIR, '**', '*.py'), recursive=True)
                 if '_base_' not in p.split(os.sep))


def test_configs_found():
    assert len(CONFIGS) >= 8


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_builds(path, synthetic_root):
    cfg = Config.fromfile(path)
    for module in cfg.custom_imports.imports:  # what the runner does with custom_imports
        importlib.import_module(module)
    is_det = cfg.default_scope == 'mmdet'
    set_data_root(cfg, os.path.join(synthetic_root, 'labeled' if is_det else 'unlabeled'))
    if any(ds.get('type') in UNLABELED_TYPES for ds in dataloader_datasets(cfg)):
        set_unlabeled_root(cfg, os.path.join(synthetic_root, 'unlabeled'))  # semi-supervised
    if is_det:
        assert cfg.custom_imports == dict(imports=['custom_modules'], allow_failed_imports=False)
        assert cfg.model.get('detector', cfg.model).roi_head.bbox_head.num_classes == 100
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        init_default_scope(cfg.default_scope)
        model = MODELS.build(cfg.model)  # no init_weights(): nothing is downloaded or loaded
        # the real recipes' backbones; the ViT demos use a ViT-Tiny (5.5 M) to fit CPU minutes
        backbone = getattr(model, 'student', model).backbone
        size = sum(p.numel() for p in backbone.parameters())
        smallest = 5e6 if 'vit-tiny' in os.path.basename(path) else 23e6  # ResNet-50: 23.5 M
        assert size > smallest, size
        for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            if cfg.get(name):
                ds = DATASETS.build(cfg[name].dataset)
                assert len(ds) > 0


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_checkpoints_are_saved_through_the_atomic_backend(path):
    """Every config's CheckpointHook (and so TimeLimitHook and KeepCheckpointHook, which follow
    it: custom_modules/engine/hooks/checkpoint_hooks.py) writes a temporary file and renames it
    (tests/engine/test_guards.py)."""
    cfg = Config.fromfile(path)
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend='atomic_local')
