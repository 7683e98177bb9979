from .classes import LABELED_CLASSES, LABELED_PALETTE
from .coco_det import CocoDataError, CocoFormatDataset, read_coco
from .labeled_det import LabeledDetDataset
from .labeled_index import IndexReport, LabeledDataError, Record, load_split

# .unlabeled (mmpretrain) is imported by the MoCo configs' custom_imports only, so detection
# runs do not load mmpretrain
__all__ = ['LABELED_CLASSES', 'LABELED_PALETTE', 'CocoDataError', 'CocoFormatDataset',
           'LabeledDetDataset', 'LabeledDataError', 'IndexReport', 'Record', 'load_split',
           'read_coco']
