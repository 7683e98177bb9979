"""tools/test.py --best-of names the last validated epoch's score beside the best one's: the best
of several epochs on the validation split is an optimistic estimate (detectron2 reports the
last iteration)."""
import json
import os
import runpy

from mmengine.config import Config

from helpers import REPO, tool_path

SEED_STEP = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_'
                         'labeled.py')


def _log(work_dir, run, records):
    folder = os.path.join(work_dir, run, 'vis_data')
    os.makedirs(folder)
    with open(os.path.join(folder, 'scalars.json'), 'w') as f:
        for r in records:
            f.write(json.dumps(r) + '\n')


def _stages(tmp_path):
    """Three stages' folders as the seed's schedule writes them: s1 validates epochs 1-3, s2 4-5
    (resumed once: its second run validates epoch 5 again, higher), s3 6-7."""
    dirs = [str(tmp_path / s) for s in ('s1', 's2', 's3')]
    _log(dirs[0], '20261201_000000', [{'coco/bbox_mAP': 0.1 * e, 'step': e} for e in (1, 2, 3)]
         + [{'loss': 1.0, 'iter': 10, 'epoch': 1}])
    _log(dirs[1], '20261202_000000', [{'coco/bbox_mAP': 0.41, 'step': 4},
                                      {'coco/bbox_mAP': 0.30, 'step': 5}])
    _log(dirs[1], '20261202_010000', [{'coco/bbox_mAP': 0.35, 'step': 5}])
    _log(dirs[2], '20261203_000000', [{'coco/bbox_mAP': 0.38, 'step': 6},
                                      {'coco/bbox_mAP': 0.37, 'step': 7}])
    return dirs


def test_last_validation_is_the_last_stages_last_epoch(tmp_path):
    from toolkit.scalars import last_validation
    dirs = _stages(tmp_path)
    assert last_validation(dirs, 'coco/bbox_mAP') == (7, 0.37)
    assert last_validation(dirs[:2], 'coco/bbox_mAP') == (5, 0.35)  # the resumed run's value
    assert last_validation(dirs + [str(tmp_path / 'never_validated')], 'coco/bbox_mAP') == (7, 0.37)
    assert last_validation(dirs, 'coco/segm_mAP') is None


def test_best_of_line_names_the_last_epoch_beside_the_best(tmp_path):
    last_epoch = runpy.run_path(tool_path('test.py'))['_last_epoch']
    cfg = Config.fromfile(SEED_STEP)
    assert cfg.default_hooks.checkpoint.save_best == 'coco/bbox_mAP'
    line = last_epoch(_stages(tmp_path), cfg)
    assert line.startswith('; the last validated epoch, 7, scored 0.3700 ')
    assert last_epoch([str(tmp_path / 'empty')], cfg) == ''
