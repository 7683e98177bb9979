"""The configured val_evaluator reports pycocotools' numbers, from the real val pipeline's data."""
import contextlib
import io
import os

import numpy as np
import torch
from benchmarks.bench_coco_eval import make_data, metric_eval, recording, seed_eval
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from custom_modules.datasets.classes import LABELED_CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
