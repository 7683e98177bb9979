from . import transforms  # noqa: F401
from .classes import LABELED_CLASSES, LABELED_PALETTE
from .coco_det import CocoDataError, CocoFormatDataset, read_coco
from .labeled_det import LabeledDetDataset
from .labeled_index import IndexReport, LabeledDataError, Record, load_split
from .samplers import ResumableBatchSampler, SampleIndex, SemiSupervisedSampler
from .unlabeled_det import SeededConcatDataset, UnlabeledDetDataset

# .unlabeled and .transforms.moco (mmpretrain types) are imported by the pretraining configs'
# custom_imports only
__all__ = ['LABELED_CLASSES', 'LABELED_PALETTE', 'CocoDataError', 'CocoFormatDataset',
           'LabeledDetDataset', 'LabeledDataError', 'IndexReport', 'Record', 'load_split',
           'read_coco', 'ResumableBatchSampler', 'SampleIndex', 'SeededConcatDataset',
           'SemiSupervisedSampler', 'UnlabeledDetDataset']
