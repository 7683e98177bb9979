"""Print the val_evaluator's COCO summary on stdout, exactly as pycocotools does.

FasterCocoMetric's COCOeval (faster-coco-eval) reports through the Python logger
``faster_coco_eval``, which has no handler unless the application adds one: without this the
12-line summary the seed printed would be silently dropped. faster-coco-eval also prints AR at
IoU 0.50 and 0.75, which pycocotools does not: those two lines are left out so the summary is
the seed's 12 lines (their values stay in the metric's stats).
"""
import logging
import re

_NOT_PYCOCOTOOLS = re.compile(r'Average Recall .*IoU=0\.(50|75) ')


class _Print(logging.Handler):
    # print() looks sys.stdout up at each call, so redirections and test capture still apply
    def emit(self, record):
        msg = self.format(record)
        if not _NOT_PYCOCOTOOLS.search(msg):
            print(msg)


_logger = logging.getLogger('faster_coco_eval')
if not _logger.handlers:
    _logger.addHandler(_Print())
    _logger.setLevel(logging.INFO)
    _logger.propagate = False  # printed once, also when the root logger has a handler
