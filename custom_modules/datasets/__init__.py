from .classes import LABELED_CLASSES, LABELED_PALETTE
from .labeled_det import LabeledDetDataset
from .labeled_index import IndexReport, LabeledDataError, Record, load_split

__all__ = ['LABELED_CLASSES', 'LABELED_PALETTE', 'LabeledDetDataset', 'LabeledDataError',
           'IndexReport', 'Record', 'load_split']
