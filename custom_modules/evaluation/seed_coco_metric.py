"""SeedCocoMetric: mmdet's FasterCocoMetric that prints pycocotools' 12-line summary on stdout and
keeps the per-class table short.

Summary: FasterCocoMetric's COCOeval (faster-coco-eval) reports through the Python logger
``faster_coco_eval``, which has no handler unless the application adds one: the 12-line summary
the seed printed would be silently dropped. SeedCocoMetric gives each COCOeval it runs a print
function that print()s the summary lines, exactly as pycocotools does; faster-coco-eval's AR at
IoU 0.50 and 0.75, which pycocotools does not print, are left out (their values stay in the
COCOeval's stats), and its progress chatter ('Evaluate annotation type', 'DONE (t=..)') goes on
to the ``faster_coco_eval`` logger as before. Nothing happens at import beyond registering.

classwise=True: FasterCocoMetric logs every class of the dataset as one table (100 rows, most of
them nan when a split lacks a class). SeedCocoMetric logs only the classes with ground truth in
the evaluated images, writes the table of all classes to ``classwise_file`` (default:
``classwise_ap.csv`` beside the run's log file) and logs its path. The ``<class>_precision``
metrics are kept for the classes with ground truth only (the others are all nan).

seed_comparable_class='cup or mug': the seed and the peer trained torchvision detectors with the
course's labels 0..99, so class 0 shared torchvision's background index and was never detected;
their AP is a mean in which that class scores 0. The metric then also evaluates the detections
without that class, which is what their evaluation would have printed for this model, prints
one line with it and returns it as ``bbox_seed_mAP`` (and ``_50``, ``_75``, ``_s``, ``_m``, ``_l``).
"""
import csv
import logging
import os
import os.path as osp
import re
from collections import Counter
from typing import Dict, Optional

import numpy as np
from mmdet.evaluation.metrics import DumpDetResults, faster_coco_metric
from mmdet.evaluation.metrics.faster_coco_metric import FasterCocoMetric
from mmdet.registry import METRICS
from mmengine.logging import MMLogger
from terminaltables import AsciiTable

_NOT_PYCOCOTOOLS = re.compile(r'Average Recall .*IoU=0\.(50|75) ')
_chatter = logging.getLogger('faster_coco_eval')
# (column, IoU index or None for 0.50:0.95, area index) as in mmdet's classwise table
_COLUMNS = (('mAP', None, 0), ('mAP_50', 0, 0), ('mAP_75', 5, 0),
            ('mAP_s', None, 1), ('mAP_m', None, 2), ('mAP_l', None, 3))


def print_summary_line(msg) -> None:
    """COCOeval's print function: the summary lines on stdout as pycocotools prints them."""
    msg = str(msg)
    if msg.startswith(' Average '):  # COCOeval._summarize's lines
        if not _NOT_PYCOCOTOOLS.search(msg):
            print(msg)  # looks sys.stdout up at each call: redirections and capture apply
    else:
        _chatter.info(msg)


def _mean_precision(precisions, iou, k, area) -> float:
    # precision: [IoU, recall, class, area range, max dets]; -1 where the class has no GT
    p = precisions[:, :, k, area, -1] if iou is None else precisions[iou, :, k, area, -1]
    p = p[p > -1]
    return float(np.mean(p)) if p.size else float('nan')


@METRICS.register_module()
class SeedCocoMetric(FasterCocoMetric):
    """FasterCocoMetric (same arguments and numbers) with pycocotools' printed summary and a
    short classwise table; ``classwise_file``: where the table of all classes goes (default
    ``classwise_ap.csv`` beside the current MMLogger's log file, else in the working
    directory)."""

    def __init__(self, *args, classwise_file: Optional[str] = None,
                 seed_comparable_class: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.classwise_file = classwise_file
        self.seed_comparable_class = seed_comparable_class

    def compute_metrics(self, results: list) -> Dict[str, float]:
        # FasterCocoMetric builds its COCOeval inside compute_metrics from the module global
        # COCOeval_faster: a subclass swapped in for the call sets the print function and keeps
        # the instances for the classwise table. Looked up at call time, so a class swapped in
        # by a caller (tests/tools/test_coco_eval.py's recorder) still runs underneath.
        base = faster_coco_metric.COCOeval_faster
        evals = []

        class _Eval(base):
            def __init__(self_, *a, **kw):
                super().__init__(*a, **kw)
                self_.print_function = print_summary_line
                evals.append(self_)

        classwise, self.classwise = self.classwise, False  # the long table: ours below
        faster_coco_metric.COCOeval_faster = _Eval
        try:
            eval_results = super().compute_metrics(results)
        finally:
            faster_coco_metric.COCOeval_faster = base
            self.classwise = classwise
        for ev in evals:
            if not (ev.params.useCats and 'precision' in ev.eval):  # metric='proposal'
                continue
            if classwise:
                eval_results.update(self._classwise(ev))
            if self.seed_comparable_class and ev.params.iouType == 'bbox':
                eval_results.update(self._seed_comparable(base, ev))
        return eval_results

    def _seed_comparable(self, base, ev) -> Dict[str, float]:
        name = self.seed_comparable_class
        classes = list(self.dataset_meta['classes'])
        if name not in classes:
            return {}
        cat_id = self.cat_ids[classes.index(name)]
        kept = [dict(a) for a in ev.cocoDt.dataset['annotations'] if a['category_id'] != cat_id]
        seed_ev = base(ev.cocoGt, ev.cocoGt.loadRes(kept), 'bbox')
        seed_ev.print_function = _chatter.info
        for key in ('catIds', 'imgIds', 'maxDets', 'iouThrs'):
            setattr(seed_ev.params, key, getattr(ev.params, key))
        seed_ev.evaluate()
        seed_ev.accumulate()
        seed_ev.summarize()
        stats = {k: round(float(v), 3) for k, v in zip(
            ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l'), seed_ev.stats[:6])}
        print(f' AP as the seed\'s and the peer\'s evaluation would print it ({name!r} never '
              f'detected): AP {stats["mAP"]:.3f}, AP50 {stats["mAP_50"]:.3f}, '
              f'AP75 {stats["mAP_75"]:.3f}')
        return {f'bbox_seed_{k}': v for k, v in stats.items()}

    def _classwise(self, ev) -> Dict[str, float]:
        logger = MMLogger.get_current_instance()
        precisions = ev.eval['precision']
        assert len(self.cat_ids) == precisions.shape[2]
        gts = self._coco_api.loadAnns(self._coco_api.getAnnIds(imgIds=self.img_ids))
        gt_boxes = Counter(a['category_id'] for a in gts)  # in the evaluated images
        rows, shown, metrics = [], [], {}
        for k, cat_id in enumerate(self.cat_ids):
            name = self._coco_api.loadCats(cat_id)[0]['name']
            n_gt = gt_boxes[cat_id]
            aps = [_mean_precision(precisions, iou, k, area) for _, iou, area in _COLUMNS]
            rows.append([name, n_gt] + aps)
            if n_gt:
                shown.append([name, n_gt] + [f'{round(ap, 3)}' for ap in aps])
                metrics[f'{name}_precision'] = round(aps[0], 3)
        path = self._classwise_path(ev.params.iouType)
        os.makedirs(osp.dirname(path) or '.', exist_ok=True)
        with open(path, 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(['category', 'gt_boxes'] + [c for c, _, _ in _COLUMNS])
            w.writerows([r[:2] + [f'{v:.4f}' for v in r[2:]] for r in rows])
        header = ['category', 'gt_boxes'] + [c for c, _, _ in _COLUMNS]
        logger.info(f'per-class {ev.params.iouType} AP, the {len(shown)} of {len(rows)} classes '
                    f'with ground truth here:\n' + AsciiTable([header] + shown).table)
        logger.info(f'per-class AP of all {len(rows)} classes: {path}')
        return metrics

    def _classwise_path(self, iou_type: str) -> str:
        name = 'classwise_ap.csv' if iou_type == 'bbox' else f'classwise_ap_{iou_type}.csv'
        if self.classwise_file:
            root, ext = osp.splitext(self.classwise_file)
            return self.classwise_file if iou_type == 'bbox' else f'{root}_{iou_type}{ext}'
        log_file = MMLogger.get_current_instance().log_file
        return osp.join(osp.dirname(log_file) if log_file else '.', name)


@METRICS.register_module()
class DumpDetResultsWithClasses(DumpDetResults):
    """mmdet's DumpDetResults (tools/test.py --out) that also gives each sample ``classes``, the
    dataset's class names (one shared object, which pickle stores once per file), so the file
    says what its label ids mean (tools/plot_curves.py --predictions)."""
    default_prefix = 'predictions'  # it returns no metrics; named so mmengine does not warn

    def process(self, data_batch, data_samples) -> None:
        classes = self.dataset_meta['classes']
        super().process(data_batch, [dict(s, classes=classes) for s in data_samples])
