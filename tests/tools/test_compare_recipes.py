"""`make compare` (tools/compare_recipes.py) covers every fine-tuning recipe that has a demo
config, and `--recipes` runs the chosen rows with only the pretrainings they start from. The
trainings themselves are the demo configs' (trained in test_pipeline, test_ssl_recipe and
test_mae_vitdet); here the tools are recorded, not run."""
import glob
import os

import pytest

import compare_recipes
from helpers import REPO


def test_every_detection_demo_config_is_a_row():
    demos = {os.path.relpath(p, REPO) for d in ('faster_rcnn', 'vitdet')
             for p in glob.glob(os.path.join(REPO, 'configs', d, '*demo*_synthetic.py'))}
    # the random-backbone demo is the seed demo with init_cfg=None, as every "random init" cell
    demos.discard('configs/faster_rcnn/faster-rcnn_r50-scratch_fpn_1xb4-demo-4e_synthetic.py')
    assert demos == {cfg for _, cfg, _ in compare_recipes.RECIPES}
    assert [r.split()[0] for r, _, _ in compare_recipes.RECIPES] == [
        'seed', 'SSL', "peer's", 'ViTDet-style']
    for _, _, inits in compare_recipes.RECIPES:
        assert None in inits and set(inits) - {None} <= set(compare_recipes.PRETRAIN)


def fake_tools(monkeypatch, tmp_path):
    """Record each tool call; a training leaves a checkpoint name, a test prints two AP lines."""
    calls = []

    def run(cmd, log):
        calls.append(cmd)
        if cmd[0] == 'tools/train.py':
            work = cmd[cmd.index('--work-dir') + 1]
            open(os.path.join(work, 'last_checkpoint'), 'w').write(f'{work}/epoch_4.pth')
        elif cmd[0] == 'tools/test.py':
            open(log, 'w').write(
                ' Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.125\n'
                ' Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 0.250\n')
        return 0.5

    monkeypatch.setattr(compare_recipes, 'run', run)
    (tmp_path / 'data' / 'labeled').mkdir(parents=True)
    return calls


def test_recipes_option_runs_the_chosen_rows_only(monkeypatch, tmp_path):
    calls = fake_tools(monkeypatch, tmp_path)
    out = tmp_path / 'out'
    compare_recipes.main(['--out', str(out), '--data', str(tmp_path / 'data'),
                          '--recipes', 'vitdet'])
    trained = [c[1] for c in calls if c[0] == 'tools/train.py']
    vitdet = 'configs/vitdet/faster-rcnn_vit-tiny-win-mae-pre_sfp_1xb4-lsj-demo-4e_synthetic.py'
    assert trained == [compare_recipes.PRETRAIN['MAE'], vitdet, vitdet]
    det = [c for c in calls if c[0] == 'tools/train.py'][1:]
    assert '--pretrained' in det[0] and 'model.backbone.init_cfg=None' in det[1]
    rows = [line for line in open(out / 'results.md') if line.startswith('| ViTDet')]
    assert [r.split(' | ')[1:4] for r in rows] == [['MAE', '0.125', '0.250'],
                                                    ['random init', '0.125', '0.250']]


def test_recipes_option_refuses_unknown_words(monkeypatch, tmp_path, capsys):
    fake_tools(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as e:
        compare_recipes.main(['--out', str(tmp_path / 'out'), '--recipes', 'yolo'])
    assert e.value.code == 2 and '--recipes / --init: no cell left' in capsys.readouterr().err


def test_lr_sweep_trains_each_chosen_cell_once_per_lr(monkeypatch, tmp_path):
    calls = fake_tools(monkeypatch, tmp_path)
    out = tmp_path / 'out'
    compare_recipes.main(['--out', str(out), '--data', str(tmp_path / 'data'),
                          '--recipes', 'vitdet', '--init', 'MAE', '--lr', '6.25e-6', '2e-4'])
    det = [c for c in calls if c[0] == 'tools/train.py'][1:]
    assert len(det) == 2 and all('--pretrained' in c for c in det)
    assert [c[c.index('--cfg-options') + 1:c.index('--work-dir')] for c in det] == [
        ['optim_wrapper.optimizer.lr=6.25e-06'], ['optim_wrapper.optimizer.lr=0.0002']]
    assert len({c[c.index('--work-dir') + 1] for c in det}) == 2  # one folder per LR
    rows = [line for line in open(out / 'results.md') if line.startswith('| ViTDet')]
    assert [r.split(' | ')[1:4] for r in rows] == [['MAE', '6.25e-06', '0.125'],
                                                    ['MAE', '0.0002', '0.125']]
    calls.clear()  # random init: the LR joins the one --cfg-options list
    compare_recipes.main(['--out', str(out), '--data', str(tmp_path / 'data'),
                          '--recipes', 'vitdet', '--init', 'random', '--lr', '1e-4'])
    det = [c for c in calls if c[0] == 'tools/train.py']
    assert det[0].count('--cfg-options') == 1 and 'optim_wrapper.optimizer.lr=0.0001' in det[0]


def test_semi_supervised_rows_continue_the_seed_cell_with_and_without_unlabeled_images(
        monkeypatch, tmp_path):
    calls = fake_tools(monkeypatch, tmp_path)
    out = tmp_path / 'out'
    compare_recipes.main(['--out', str(out), '--data', str(tmp_path / 'data'),
                          '--recipes', 'semi'])
    trained = [c for c in calls if c[0] == 'tools/train.py']
    assert [c[1] for c in trained] == [compare_recipes.PRETRAIN['MoCo v2'],
                                       compare_recipes.SEED_DEMO, compare_recipes.SEMI_DEMO,
                                       compare_recipes.SEED_DEMO]
    seed_work = trained[1][trained[1].index('--work-dir') + 1]
    semi, supervised = trained[2:]
    for c in (semi, supervised):  # both from the seed cell's checkpoint, for one epoch
        assert f'load_from={seed_work}/epoch_4.pth' in c and 'train_cfg.max_epochs=1' in c
    data = str(tmp_path / 'data')
    assert semi[semi.index('--unlabeled') + 1] == os.path.join(data, 'unlabeled')
    assert '--unlabeled' not in supervised
    # the same optimizer steps (one labeled image each) and LR as the semi demo's
    from mmengine.config import Config
    demo = Config.fromfile(os.path.join(REPO, compare_recipes.SEMI_DEMO))
    assert demo.train_dataloader.sampler.source_ratio == [1, 4]
    assert demo.optim_wrapper.optimizer.lr == compare_recipes.SEMI_LR
    assert demo.param_scheduler[0].end == compare_recipes.SEMI_WARMUP
    assert {'train_dataloader.batch_size=1', f'optim_wrapper.optimizer.lr={compare_recipes.SEMI_LR}',
            f'param_scheduler.0.end={compare_recipes.SEMI_WARMUP}'} <= set(supervised)
    tested = [c[1] for c in calls if c[0] == 'tools/test.py']
    assert tested[-2:] == [compare_recipes.SEMI_DEMO, compare_recipes.SEED_DEMO]
    rows = [line.split(' | ')[0:3] for line in open(out / 'results.md') if line.startswith('| ')]
    assert [r[0][2:].split(':')[0] for r in rows[1:]] == ['seed (R50, frozen BN, 2fc head, one '
                                                           'scale)', 'semi-supervised',
                                                           'supervised']
    assert all(r[1] == 'MoCo v2' for r in rows[1:])


def test_default_run_has_the_semi_rows_and_an_lr_sweep_does_not(monkeypatch, tmp_path):
    calls = fake_tools(monkeypatch, tmp_path)
    compare_recipes.main(['--out', str(tmp_path / 'a'), '--data', str(tmp_path / 'data')])
    assert compare_recipes.SEMI_DEMO in [c[1] for c in calls]
    calls.clear()
    compare_recipes.main(['--out', str(tmp_path / 'b'), '--data', str(tmp_path / 'data'),
                          '--recipes', 'seed', '--lr', '0.01'])
    assert compare_recipes.SEMI_DEMO not in [c[1] for c in calls]
