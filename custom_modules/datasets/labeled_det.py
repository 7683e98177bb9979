"""MMDetection dataset over the course's LabeledDataset folders (see labeled_index.py)."""
from __future__ import annotations

from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS
from mmengine.logging import MMLogger

from .samplers import SeededSamplesMixin
from .classes import LABELED_CLASSES, LABELED_PALETTE
from .labeled_index import load_split


@DATASETS.register_module()
class LabeledDetDataset(SeededSamplesMixin, BaseDetDataset):
    """``<data_root>/<split>/images/<id>.JPEG`` + ``<data_root>/<split>/labels/<id>.yml``.

    Args:
        split: sub-folder of ``data_root``, ``'training'`` or ``'validation'`` in the course data.
        index_cache_dir: where the parsed index is cached (default ``~/.cache/labeled-det-index``);
            the dataset itself is never written to, as it is often a read-only squashfs mount.
        use_index_cache: set False to always re-read every yml file.
        num_index_workers: processes parsing yml files (default: up to 8 CPUs).
        **kwargs: the usual :class:`BaseDetDataset` arguments (pipeline, test_mode,
            filter_cfg, metainfo, ...). ``metainfo=dict(classes=...)`` may name a subset of the
            100 classes; boxes of other classes are then dropped and counted.
    """

    METAINFO = dict(classes=LABELED_CLASSES, palette=LABELED_PALETTE)

    def __init__(self, *args, split: str = 'training', index_cache_dir: str | None = None,
                 use_index_cache: bool = True, num_index_workers: int | None = None,
                 **kwargs) -> None:
        self.split = split
        self.index_cache_dir = index_cache_dir
        self.use_index_cache = use_index_cache
        self.num_index_workers = num_index_workers
        self.index_report = None
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        records, report = load_split(
            self.data_root, self.split, classes=self.metainfo['classes'],
            cache_dir=self.index_cache_dir, use_cache=self.use_index_cache,
            num_workers=self.num_index_workers)
        self.index_report = report
        logger = MMLogger.get_current_instance()
        logger.info(f'{report.split_dir}: {report.num_images} images, {report.num_boxes} boxes'
                    + (' (index from cache)' if report.from_cache else ''))
        report.log(logger)
        return [
            dict(img_path=r.img_path, img_id=r.img_id, width=r.width, height=r.height,
                 instances=[dict(bbox=box.tolist(), bbox_label=int(label), ignore_flag=0)
                            for box, label in zip(r.bboxes, r.labels)])
            for r in records
        ]

    def filter_data(self) -> list[dict]:
        """Training only: drop the images ``filter_cfg`` names (``filter_empty_gt``: those
        without objects; ``min_size``: those with a shorter side below it). The configs here
        keep every image, as the seed did."""
        if self.test_mode or not self.filter_cfg:
            return self.data_list
        filter_empty = self.filter_cfg.get('filter_empty_gt', False)
        min_size = self.filter_cfg.get('min_size', 0)
        kept = [d for d in self.data_list
                if not (filter_empty and not d['instances'])
                and min(d['width'], d['height']) >= min_size]
        if len(kept) != len(self.data_list):
            MMLogger.get_current_instance().info(
                f'{self.split}: filter_cfg {dict(self.filter_cfg)} kept {len(kept)} of '
                f'{len(self.data_list)} images')
        return kept
