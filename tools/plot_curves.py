"""Plot training curves of one or more runs, or per-class results of a test.

    python tools/plot_curves.py WORK_DIR [WORK_DIR ...] [--keys loss lr bbox_mAP]
        [--labels NAME ...] [--out FILE.png]
    python tools/plot_curves.py --predictions PRED.pkl [--out-dir DIR] [--score-thr 0.3]
        [--tp-iou 0.5] [--max-classes 30] [--data-root DIR | --ann-file FILE]

Curves: one panel per key, the runs overlaid (e.g. MoCo-init vs random-init fine-tuning), from
the scalar log tools/train.py writes (WORK_DIR/<timestamp>/vis_data/scalars.json; the runs of a
resumed work folder are joined). Training scalars (loss, lr, ...) against the iteration,
validation metrics (bbox_mAP is coco/bbox_mAP) against the epoch. A key is the scalar's name or
its last part after '/'. Default --out: WORK_DIR/curves.png of the first run.

--predictions (the per-class option): a tools/test.py --out file, evaluated again with the
ground truth it holds. DIR (default: the file's folder) gets classwise_ap.csv and
classwise_ap.png (AP and AP50 of each class with ground truth, the same numbers as test.py
--classwise) and confusion_matrix.png (mmdet's confusion matrix: detections scoring at least
--score-thr matched to ground truth at IoU >= --tp-iou; background is a missed object or a
detection of nothing; the classes with the most ground truth, the others summed). Class names:
those tools/test.py recorded in the file, or those of the data given with --data-root (a COCO
folder's categories, a course-layout folder's table) or --ann-file (a COCO file), which must be
the same; a file that records none needs one of the two.
"""
import argparse
import os
import os.path as osp

from toolkit import bootstrap  # noqa: E402

bootstrap.setup()


def parse_args(argv=None):
    # the whole docstring: it says what each of the two modes reads and writes
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('work_dirs', nargs='*', metavar='WORK_DIR', help='training work folders')
    p.add_argument('--keys', nargs='+', default=['loss', 'lr', 'bbox_mAP'],
                   help='scalars to plot, one panel each (default: loss lr bbox_mAP)')
    p.add_argument('--labels', nargs='+', help='legend name of each run (default: folder name)')
    p.add_argument('--out', help='curves picture (default: WORK_DIR/curves.png, first run)')
    p.add_argument('--predictions', metavar='PRED.pkl',
                   help='instead of curves: per-class AP and confusion matrix of this file')
    p.add_argument('--out-dir', help='--predictions: output folder (default: the file\'s)')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='--predictions: lowest score counted in the confusion matrix')
    p.add_argument('--tp-iou', type=float, default=0.5,
                   help='--predictions: IoU at which a detection matches a ground-truth box')
    p.add_argument('--max-classes', type=int, default=30,
                   help='--predictions: classes shown in the confusion matrix')
    p.add_argument('--data-root', help='--predictions: the labeled data they were made on, for '
                   'the class names (COCO or course layout; default: the names in the file)')
    p.add_argument('--ann-file', help='--predictions: a COCO annotation file, for the class names')
    args = p.parse_args(argv)
    if bool(args.work_dirs) == bool(args.predictions):
        p.error('give WORK_DIR(s) for curves or --predictions PRED.pkl, not both')
    if args.labels and len(args.labels) != len(args.work_dirs):
        p.error(f'--labels: {len(args.labels)} names for {len(args.work_dirs)} runs')
    return args


# ------------------------------------------------------------------------------------ curves
def find_key(key: str, train: dict, val: dict):
    """(full name, 'iteration' or 'epoch', {step: value}) of ``key`` in a run, or None."""
    for scalars, axis in ((train, 'iteration'), (val, 'epoch')):
        for name in scalars:
            if name == key or name.endswith('/' + key):
                return name, axis, scalars[name]
    return None


def plot_curves(args) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from custom_modules.errors import UserError
    from toolkit.scalars import read_scalars
    runs = [read_scalars(d) for d in args.work_dirs]
    labels = args.labels or [osp.basename(osp.normpath(d)) for d in args.work_dirs]
    panels = []
    for key in args.keys:
        found = [(label, find_key(key, *run)) for label, run in zip(labels, runs)]
        missing = [label for label, hit in found if hit is None]
        if missing:
            print(f'no {key!r} in {", ".join(missing)}' + (
                ' (validation was off in training?)' if 'mAP' in key else ''))
        if len(missing) < len(found):
            panels.append((key, [(label, hit) for label, hit in found if hit]))
    if not panels:
        names = sorted({n for train, val in runs for n in (*train, *val)})
        raise UserError(f'none of --keys {" ".join(args.keys)} is in these runs; they have: '
                        f'{", ".join(names)}')
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (key, hits) in zip(axes.flat, panels):
        for label, (name, axis, values) in hits:
            steps = sorted(values)
            ax.plot(steps, [values[s] for s in steps], label=label,
                    marker='o' if axis == 'epoch' else None)
            ax.set_title(name)
            ax.set_xlabel(axis)
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes.flat[len(panels):]:
        ax.axis('off')
    fig.tight_layout()
    out = args.out or osp.join(args.work_dirs[0], 'curves.png')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------- per class
def load_predictions(path: str) -> list:
    import pickle

    from custom_modules.errors import UserError
    if not osp.isfile(path):
        raise UserError(f'--predictions {path}: file does not exist')
    try:
        with open(path, 'rb') as f:
            samples = pickle.load(f)
    except Exception as e:  # not a pickle at all
        raise UserError(f'--predictions {path}: not a tools/test.py --out file '
                        f'({type(e).__name__}: {e})') from e
    if not (isinstance(samples, list) and samples and isinstance(samples[0], dict)
            and 'pred_instances' in samples[0]):
        raise UserError(f'--predictions {path}: not a tools/test.py --out file (a list of '
                        'per-image predictions)')
    if 'instances' not in samples[0]:
        raise UserError(f'--predictions {path} holds no ground truth (\'instances\'): write it '
                        'with a config whose test pipeline packs them (PackDetInputs meta_keys)')
    return samples


def evaluate(samples: list, classes, csv_path: str) -> float:
    """COCO bbox AP of the predictions (the metric tools/test.py runs), with the per-class
    table written to ``csv_path``; returns the mAP."""
    import torch

    from custom_modules.evaluation.seed_coco_metric import SeedCocoMetric
    metric = SeedCocoMetric(metric='bbox', proposal_nums=(1, 10, 100), classwise=True,
                            classwise_file=csv_path)
    metric.dataset_meta = dict(classes=classes)
    for sample in samples:
        # the metric reads the ground truth from gt_instances, which --out leaves out: rebuilt
        # from the 'instances' kept beside it (what LoadAnnotations made them from)
        kept = [i for i in sample['instances'] if not i.get('ignore_flag')]
        boxes = torch.tensor([i['bbox'] for i in kept], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([i['bbox_label'] for i in kept], dtype=torch.int64)
        metric.process({}, [dict(sample, gt_instances=dict(bboxes=boxes, labels=labels))])
    return metric.evaluate(len(samples))['coco/bbox_mAP']


def plot_classwise_ap(csv_path: str, title: str, out_file: str) -> None:
    import csv

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    with open(csv_path) as f:
        rows = [r for r in csv.DictReader(f) if int(r['gt_boxes']) > 0]
    rows.sort(key=lambda r: float(r['mAP']))
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * len(rows)))
    ax.barh(y + 0.2, [float(r['mAP_50']) for r in rows], height=0.4, label='AP50')
    ax.barh(y - 0.2, [float(r['mAP']) for r in rows], height=0.4, label='AP (IoU 0.50:0.95)')
    ax.set_yticks(y, [f'{r["category"]} ({r["gt_boxes"]})' for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel('AP (ground-truth boxes in brackets)')
    ax.set_title(title)
    ax.grid(axis='x', alpha=0.3)
    ax.legend(loc='lower right')
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)


def upstream_tool(name: str):
    """mmdet's tools/analysis_tools/<name>.py as installed with the package (mmdet/.mim)."""
    import importlib.util

    import mmdet

    from custom_modules.errors import UserError
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'analysis_tools', name + '.py')
    if not osp.isfile(path):
        raise UserError(f'{path} is missing: this mmdet installation has no tools/ (reinstall '
                        'it with `make setup`)')
    spec = importlib.util.spec_from_file_location(f'mmdet_analysis_tools_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def confusion_matrix(samples: list, num_classes: int, score_thr: float, tp_iou: float):
    """mmdet's (num_classes + 1)^2 confusion matrix: rows ground truth, columns detections, the
    last of each background."""
    import numpy as np
    tool = upstream_tool('confusion_matrix')
    matrix = np.zeros((num_classes + 1, num_classes + 1))
    for sample in samples:
        tool.analyze_per_img_dets(matrix, sample['instances'], sample['pred_instances'],
                                  score_thr, tp_iou)
    return matrix


def shown_classes(matrix, classes, most: int):
    """The matrix reduced to the ``most`` classes with the most ground truth among those that
    occur; the other classes that occur summed into 'other classes' (so rows keep their totals),
    background last. Returns (matrix, names)."""
    import numpy as np
    n = len(classes)
    used = [k for k in range(n) if matrix[k].any() or matrix[:, k].any()]
    shown = sorted(sorted(used, key=lambda k: -matrix[k].sum())[:most])
    rest = [k for k in used if k not in shown]
    groups = [[k] for k in shown] + ([rest] if rest else []) + [[n]]
    names = [classes[k] for k in shown] + (['other classes'] if rest else []) + ['background']
    return np.array([[matrix[np.ix_(r, c)].sum() for c in groups] for r in groups]), names


def prediction_classes(args, samples) -> tuple:
    """The class names of the labels in ``samples``: those of the data named by --data-root (a
    COCO folder's file, a course-layout folder's table) or --ann-file, else those tools/test.py
    recorded in the file; a file that records none needs the data named, and data with other
    classes than the recorded ones, or fewer than the labels, is an error naming both."""
    from toolkit.checkpoints import class_list
    from custom_modules.datasets import LABELED_CLASSES
    from custom_modules.datasets.coco_det import CocoDataError, read_coco
    from toolkit.data_source import describe
    from custom_modules.errors import UserError
    recorded = samples[0].get('classes')
    recorded = tuple(recorded) if recorded else None
    ann = args.ann_file
    data = describe(args.data_root) if args.data_root else None
    if data is not None and data.kind == 'coco':
        ann = data.ann_file(data.splits[0])
    source = ann or (f'{args.data_root} (the course table)' if args.data_root else None)
    if source is None:
        if recorded is None:
            raise UserError(f'{args.predictions} does not record the names of its classes: give '
                            'the data the predictions were made on with --data-root DIR or '
                            '--ann-file FILE')
        return recorded
    try:
        classes = read_coco(ann).classes if ann else LABELED_CLASSES
    except CocoDataError as e:
        raise UserError(str(e)) from e
    if recorded is not None and recorded != classes:
        raise UserError(f'{args.predictions} was made on {class_list(recorded)}, but {source} '
                        f'has {class_list(classes)}: give the data the predictions were made on, '
                        'or leave out --data-root / --ann-file')
    labels = [int(x) for s in samples for x in s['pred_instances']['labels'].tolist()]
    labels += [int(g['bbox_label']) for s in samples for g in s['instances']]
    if labels and max(labels) >= len(classes):
        raise UserError(f'{args.predictions} has label {max(labels)}, but {source} names '
                        f'{len(classes)} classes: give the data the predictions were made on '
                        'with --data-root or --ann-file')
    return classes


def plot_predictions(args) -> list:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    samples = load_predictions(args.predictions)
    classes = prediction_classes(args, samples)
    out_dir = args.out_dir or osp.dirname(osp.abspath(args.predictions))
    os.makedirs(out_dir, exist_ok=True)
    csv_path = osp.join(out_dir, 'classwise_ap.csv')
    mean_ap = evaluate(samples, classes, csv_path)
    ap_png = osp.join(out_dir, 'classwise_ap.png')
    plot_classwise_ap(csv_path, f'{osp.basename(args.predictions)}: {len(samples)} images, '
                      f'AP {mean_ap:.3f}', ap_png)
    matrix = confusion_matrix(samples, len(classes), args.score_thr, args.tp_iou)
    matrix, names = shown_classes(matrix, classes, args.max_classes)
    with np.errstate(invalid='ignore'):  # a row without ground truth is 0/0: shown as -1%
        upstream_tool('confusion_matrix').plot_confusion_matrix(
            matrix, names, save_dir=out_dir, show=False,
            title=f'% of row, score >= {args.score_thr}, IoU >= {args.tp_iou}')
    plt.close('all')
    return [csv_path, ap_png, osp.join(out_dir, 'confusion_matrix.png')]


def main(argv=None):
    args = parse_args(argv)
    if args.predictions:
        for path in plot_predictions(args):
            print(path)
    else:
        print(f'curves: {plot_curves(args)}')


if __name__ == '__main__':
    bootstrap.run(main)
