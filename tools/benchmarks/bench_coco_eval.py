"""COCO bbox evaluation time: the configured val_evaluator vs plain pycocotools.

    python tools/benchmarks/bench_coco_eval.py [--num 20000] [--dets 100] [--seed 0]

Generates NUM validation-like images (200-640 px, 1-6 integer boxes of 100 classes, as in the
yml labels) and DETS float32 detections per image (noisy copies of the ground truth plus random
false positives), then evaluates the same predictions three ways, one after the other:
  seed       - pycocotools COCO + loadRes + COCOeval evaluate/accumulate/summarize, the results
               list built from the per-image tensors as the seed's evaluator did
  CocoMetric - mmdet's CocoMetric (pycocotools inside), fed through mmengine's Evaluator in
               batches of 2 as the val loop does: GT from the 'instances' meta
  FasterCocoMetric - mmdet's CocoMetric variant with faster-coco-eval's C++ COCOeval; GT from
               gt_instances, tensors as DetDataPreprocessor leaves them
(both built from the config's val_evaluator with only the type changed; '*' marks the configured
one) and prints each one's time, its ratio to the seed's, and the largest difference of the 12
summary numbers from the seed's. Metric times include the metric's own conversions (results and
GT to COCO json, loading them back), shown separately from the COCOeval part. At 20,000 images
it takes about 10 minutes and 12 GB of memory at its peak (pycocotools' per image and class
records).
"""
import argparse
import contextlib
import io
import logging
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
CONFIG = osp.join(ROOT, 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py')


def make_data(n: int, dets: int, seed: int):
    """Per image: (img_id, (h, w), gt xyxy int boxes, gt labels, pred boxes, scores, labels)."""
    rng = np.random.default_rng(seed)
    images = []
    for img_id in range(1, n + 1):
        w, h = (int(v) for v in rng.integers(200, 641, 2))
        k = int(rng.integers(1, 7))
        # log-uniform sizes: small, medium and large objects all occur
        bw = np.exp(rng.uniform(np.log(6), np.log(w), k)).astype(int)
        bh = np.exp(rng.uniform(np.log(6), np.log(h), k)).astype(int)
        x1, y1 = rng.integers(0, w - bw + 1), rng.integers(0, h - bh + 1)
        gt = np.stack([x1, y1, x1 + bw, y1 + bh], 1)
        gt_labels = rng.integers(0, 100, k)
        # up to 3 noisy hits per object (10 % of the box size), 20 % of them with a wrong class
        src = rng.integers(0, k, min(3 * k, dets))
        size = np.stack([bw, bh, bw, bh], 1)[src]
        hits = gt[src] + rng.normal(0, 0.1, (len(src), 4)) * size
        wrong = rng.integers(0, 100, len(src))
        hit_labels = np.where(rng.random(len(src)) < 0.8, gt_labels[src], wrong)
        m = dets - len(src)
        fx, fy = rng.uniform(0, w - 8, m), rng.uniform(0, h - 8, m)
        fp = np.stack([fx, fy, fx + rng.uniform(8, w, m), fy + rng.uniform(8, h, m)], 1)
        boxes = np.concatenate([hits, fp]).clip(0, [w, h, w, h])
        scores = np.concatenate([rng.uniform(0.3, 1, len(src)), rng.uniform(0, 0.6, m)])
        labels = np.concatenate([hit_labels, rng.integers(0, 100, m)])
        order = np.argsort(-scores)  # the detector returns them sorted
        images.append((img_id, (h, w), gt, gt_labels,
                       torch.from_numpy(boxes[order].astype(np.float32)),
                       torch.from_numpy(scores[order].astype(np.float32)),
                       torch.from_numpy(labels[order])))
    return images


def xywh(b):
    return [b[0], b[1], b[2] - b[0], b[3] - b[1]]


def seed_eval(images, classes):
    """pycocotools as used directly: GT dict, results list, COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    t = time.perf_counter()
    anns, results = [], []
    for img_id, _, gt, gt_labels, boxes, scores, labels in images:
        for b, c in zip(gt.tolist(), gt_labels.tolist()):
            wh = xywh(b)
            anns.append(dict(id=len(anns) + 1, image_id=img_id, bbox=wh, area=wh[2] * wh[3],
                             iscrowd=0, category_id=c))
        for b, s, c in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            results.append(dict(image_id=img_id, category_id=c, bbox=xywh(b), score=s))
    gt_api = COCO()
    gt_api.dataset = dict(
        images=[dict(id=i[0], height=i[1][0], width=i[1][1]) for i in images],
        categories=[dict(id=i, name=n) for i, n in enumerate(classes)], annotations=anns)
    gt_api.createIndex()
    ev = COCOeval(gt_api, gt_api.loadRes(results), 'bbox')
    ev.params.maxDets = [1, 10, 100]
    t_eval = time.perf_counter()
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    end = time.perf_counter()
    return np.array(ev.stats), end - t, end - t_eval


@contextlib.contextmanager
def recording(module, name):
    """Swap ``module.name`` (a COCOeval class) for a subclass that keeps its stats and times."""
    cls = getattr(module, name)
    rec = {}

    class Recorder(cls):
        def evaluate(self):
            rec['t0'] = time.perf_counter()
            return super().evaluate()

        def summarize(self):
            super().summarize()
            rec['eval_s'] = time.perf_counter() - rec['t0']
            rec['stats'] = np.array(self.stats[:12])

    setattr(module, name, Recorder)
    try:
        yield rec
    finally:
        setattr(module, name, cls)


def metric_eval(images, evaluator_cfg, classes):
    """The val loop's path: DetDataSamples through mmengine's Evaluator, 2 images a batch.
    Returns (seconds in all, seconds processing the batches, metrics)."""
    from mmdet.structures import DetDataSample
    from mmengine.evaluator import Evaluator
    from mmengine.structures import InstanceData
    samples = []
    for img_id, hw, gt, gt_labels, boxes, scores, labels in images:
        s = DetDataSample(metainfo=dict(
            img_id=img_id, ori_shape=hw,
            instances=[dict(bbox=[float(v) for v in b], bbox_label=c, ignore_flag=0)
                       for b, c in zip(gt.tolist(), gt_labels.tolist())]))
        s.gt_instances = InstanceData(bboxes=torch.from_numpy(gt.astype(np.float32)),
                                      labels=torch.from_numpy(gt_labels))
        s.pred_instances = InstanceData(bboxes=boxes, scores=scores, labels=labels)
        samples.append(s)
    evaluator = Evaluator(evaluator_cfg)
    evaluator.dataset_meta = dict(classes=classes)
    t = time.perf_counter()
    for i in range(0, len(samples), 2):
        evaluator.process(samples[i:i + 2])
    t_process = time.perf_counter() - t
    metrics = evaluator.evaluate(len(samples))
    return time.perf_counter() - t, t_process, metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--num', type=int, default=20000, help='images')
    p.add_argument('--dets', type=int, default=100, help='detections per image')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args()

    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    import mmdet.evaluation.metrics.coco_metric as coco_metric
    import mmdet.evaluation.metrics.faster_coco_metric as faster_metric
    from custom_modules.datasets.classes import LABELED_CLASSES
    init_default_scope('mmdet')
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)  # no per-step info lines
    ours_cfg = Config.fromfile(CONFIG).val_evaluator.to_dict()
    ours_cfg.pop('_delete_', None)

    t = time.perf_counter()
    images = make_data(args.num, args.dets, args.seed)
    n_gt = sum(len(i[2]) for i in images)
    print(f'data: {args.num} images, {n_gt} GT boxes, {args.num * args.dets} detections '
          f'(generated in {time.perf_counter() - t:.1f} s); val_evaluator: {ours_cfg}')
    quiet = io.StringIO()  # the three 12-line summaries
    with contextlib.redirect_stdout(quiet):
        seed_stats, seed_s, seed_eval_s = seed_eval(images, LABELED_CLASSES)
        runs = []
        for name, module, attr in (('CocoMetric', coco_metric, 'COCOeval'),
                                   ('FasterCocoMetric', faster_metric, 'COCOeval_faster')):
            with recording(module, attr) as rec:
                total, process_s, _ = metric_eval(images, dict(ours_cfg, type=name), LABELED_CLASSES)
            # ours: SeedCocoMetric is FasterCocoMetric printing the seed's summary
            ours = ours_cfg['type'] in (name, 'SeedCocoMetric' if name == 'FasterCocoMetric' else '')
            runs.append((name + ' *' * ours, total, process_s, rec))
    print(f'cpus: {os.cpu_count()}  (times in s; eval = COCOeval evaluate+accumulate+summarize)')
    print(f'{"seed (pycocotools)":28s}: {seed_s:7.1f}   eval {seed_eval_s:6.1f}, '
          f'building GT/results/loadRes {seed_s - seed_eval_s:5.1f}')
    for name, total, process_s, rec in runs:
        diff = np.abs(rec['stats'] - seed_stats).max()
        print(f'{name:28s}: {total:7.1f}   eval {rec["eval_s"]:6.1f}, process() {process_s:5.1f}, '
              f'json GT/results + load {total - process_s - rec["eval_s"]:5.1f}   '
              f'({seed_s / total:.2f}x the seed; 12 numbers max |diff| {diff:.1e})')
    print('seed stats:', ' '.join(f'{v:.4f}' for v in seed_stats))


if __name__ == '__main__':
    main()
