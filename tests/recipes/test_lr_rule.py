"""auto_scale_lr.rule (tools/toolkit/batch_scaling.py): the LR mmengine's scaling then gives, for
the ViTDet-style recipe at the batch users run it, and the warning far from the base batch."""
import logging
import math
import os
import types

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner

from helpers import REPO
from custom_modules.errors import UserError
from toolkit.batch_scaling import apply_lr_rule

VITDET = os.path.join(REPO, 'configs/vitdet/faster-rcnn_vit-b-win-mae-pre_sfp_1xb2-lsj-80e_'
                      'labeled1024.py')


def _runner(auto_scale_lr, world_size, batch_size, lr=1e-4):
    logger = logging.getLogger('test_lr_rule')
    return types.SimpleNamespace(
        auto_scale_lr=ConfigDict(auto_scale_lr), world_size=world_size, logger=logger,
        cfg=Config(dict(train_dataloader=dict(batch_size=batch_size),
                        optim_wrapper=dict(optimizer=dict(lr=lr)))),
        _train_dataloader=dict(batch_size=batch_size), param_schedulers=[])


def _scaled_lr(runner, lr=1e-4):
    """The LR mmengine's own Runner.scale_lr gives after apply_lr_rule."""
    wrapper = OptimWrapper(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr))
    apply_lr_rule(runner)
    Runner.scale_lr(runner, wrapper, runner.auto_scale_lr)
    return wrapper.optimizer.param_groups[0]['lr']


@pytest.mark.parametrize('rule, world_size, batch_size, expected', [
    ('sqrt', 1, 2, 1e-4 * math.sqrt(2 / 64)),  # the chain's default shape: 1.77e-5
    ('sqrt', 4, 16, 1e-4),  # ViTDet's own batch
    ('sqrt', 8, 32, 1e-4 * math.sqrt(4)),
    ('linear', 1, 2, 1e-4 * 2 / 64),  # 3.1e-6: 32x below the peer's 1e-4 at this batch
])
def test_the_rule_gives_the_lr(rule, world_size, batch_size, expected):
    runner = _runner(dict(enable=True, base_batch_size=64, rule=rule), world_size, batch_size)
    assert _scaled_lr(runner) == pytest.approx(expected, rel=1e-9)
    assert 'rule' not in runner.auto_scale_lr  # mmengine gets only the keys it knows


def test_a_batch_far_from_the_base_is_a_warning_with_the_lr(caplog):
    runner = _runner(dict(enable=True, base_batch_size=64, rule='sqrt'), 1, 2)
    with caplog.at_level(logging.WARNING):
        apply_lr_rule(runner)
    msg = ' '.join(r.getMessage() for r in caplog.records)
    assert 'total batch 2 (1 x 2) is 0.0312 x the 64' in msg and 'lr 0.0001 x 0.177 = 1.77e-05' \
        in msg and 'sqrt rule' in msg
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        apply_lr_rule(_runner(dict(enable=True, base_batch_size=64, rule='sqrt'), 4, 8))
    assert not caplog.records  # half the base: no warning


def test_no_rule_is_mmengines_linear_and_a_wrong_rule_is_refused():
    runner = _runner(dict(enable=True, base_batch_size=16), 2, 8)
    assert _scaled_lr(runner) == pytest.approx(1e-4)
    with pytest.raises(UserError, match="auto_scale_lr.rule='cubic'"):
        apply_lr_rule(_runner(dict(enable=True, base_batch_size=16, rule='cubic'), 1, 2))
    off = _runner(dict(enable=False, base_batch_size=16, rule='sqrt'), 1, 2)
    apply_lr_rule(off)
    assert off.auto_scale_lr.rule == 'sqrt'  # disabled: nothing scaled, nothing changed


def test_vitdet_recipe_scales_its_lr_by_the_square_root():
    cfg = Config.fromfile(VITDET)
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=64, rule='sqrt')
    assert cfg.optim_wrapper.optimizer.lr == 1e-4 and cfg.train_dataloader.batch_size == 2
