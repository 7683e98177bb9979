"""The configured val_evaluator reports pycocotools' numbers, from the real val pipeline's data."""
import contextlib
import io
import os

import numpy as np
import pytest
import torch
from benchmarks.bench_coco_eval import make_data, metric_eval, recording, seed_eval
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from custom_modules.datasets.classes import LABELED_CLASSES
from helpers import REPO


DET_FULL = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py')


def test_12_numbers_match_pycocotools():
    import mmdet.evaluation.metrics.faster_coco_metric as faster_metric
    cfg = Config.fromfile(DET_FULL)
    init_default_scope('mmdet')
    assert cfg.val_evaluator.type == 'SeedCocoMetric'  # FasterCocoMetric printing the seed's summary
    images = make_data(300, 100, seed=1)
    with contextlib.redirect_stdout(io.StringIO()):
        expected, _, _ = seed_eval(images, LABELED_CLASSES)
        with recording(faster_metric, 'COCOeval_faster') as rec:
            metric_eval(images, cfg.val_evaluator, LABELED_CLASSES)
    assert 0.1 < expected[0] < 0.9  # a mix of hits and misses, not a degenerate case
    np.testing.assert_allclose(rec['stats'], expected, rtol=0, atol=1e-4)


def test_perfect_predictions_through_the_val_pipeline_score_1(synthetic_root):
    """GT comes from gt_instances: in original pixels although the pipeline resizes."""
    from mmdet.registry import DATASETS, MODELS
    cfg = Config.fromfile(DET_FULL)
    init_default_scope('mmdet')
    cfg.val_dataloader.dataset.data_root = os.path.join(synthetic_root, 'labeled')
    ds = DATASETS.build(cfg.val_dataloader.dataset)
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    evaluator = Evaluator(cfg.val_evaluator)
    evaluator.dataset_meta = ds.metainfo
    for i in range(len(ds)):
        item = ds[i]
        sample = preprocessor(dict(inputs=[item['inputs']], data_samples=[item['data_samples']]),
                              False)['data_samples'][0]
        assert sample.img_shape != sample.ori_shape
        gt = ds.get_data_info(i)['instances']
        sample.pred_instances = InstanceData(
            bboxes=torch.tensor([g['bbox'] for g in gt]).reshape(-1, 4),
            scores=torch.ones(len(gt)), labels=torch.tensor([g['bbox_label'] for g in gt]))
        evaluator.process([sample])
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = evaluator.evaluate(len(ds))
    assert metrics['coco/bbox_mAP'] == 1.0, metrics


@pytest.mark.slow
def test_seed_comparable_ap_scores_the_detections_without_class_0():
    """tools/test.py's second line: the AP the seed's evaluation (pycocotools) gives the same
    detections once class 0, which its torchvision detector could not output, is removed."""
    cfg = Config.fromfile(DET_FULL)
    init_default_scope('mmdet')
    images = make_data(300, 100, seed=2)
    assert any(0 in gt_labels for _, _, _, gt_labels, _, _, _ in images)  # class 0 has GT
    assert any((labels == 0).any() for *_, labels in images)  # and detections
    without_0 = [im[:4] + tuple(t[im[6] != 0] for t in im[4:]) for im in images]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        everything, _, _ = seed_eval(images, LABELED_CLASSES)
        expected, _, _ = seed_eval(without_0, LABELED_CLASSES)
        _, _, metrics = metric_eval(images, dict(cfg.val_evaluator, seed_comparable_class=
                                                 LABELED_CLASSES[0]), LABELED_CLASSES)
    assert expected[0] < everything[0] - 1e-3  # removing class 0 changes the number
    got = [metrics[f'coco/bbox_seed_{k}'] for k in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m',
                                                    'mAP_l')]
    np.testing.assert_allclose(got, expected[:6], rtol=0, atol=1e-3)
    assert metrics['coco/bbox_mAP'] == round(everything[0], 3)
    line = [s for s in out.getvalue().splitlines() if 'would print' in s]
    assert line == [f" AP as the seed's and the peer's evaluation would print it ('cup or mug' "
                    f"never detected): AP {expected[0]:.3f}, AP50 {expected[1]:.3f}, "
                    f"AP75 {expected[2]:.3f}"]


def test_seed_comparable_ap_of_perfect_detections_is_the_share_of_other_classes():
    # 3 classes with GT, all found: 1.0 over all classes, 2/3 when class 0 is never detected
    images = []
    for img_id, c in enumerate((0, 1, 2, 0), start=1):
        gt = np.array([[10, 10, 60, 80]])
        images.append((img_id, (100, 100), gt, np.array([c]), torch.tensor(gt, dtype=torch.float32),
                       torch.ones(1), torch.tensor([c])))
    cfg = Config.fromfile(DET_FULL)
    init_default_scope('mmdet')
    with contextlib.redirect_stdout(io.StringIO()):
        _, _, metrics = metric_eval(images, dict(cfg.val_evaluator, seed_comparable_class=
                                                 LABELED_CLASSES[0]), LABELED_CLASSES)
    assert metrics['coco/bbox_mAP'] == 1.0
    assert metrics['coco/bbox_seed_mAP'] == round(2 / 3, 3)

