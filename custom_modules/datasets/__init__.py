from .classes import LABELED_CLASSES, LABELED_PALETTE
from .labeled_det import LabeledDetDataset
from .labeled_index import IndexReport, LabeledDataError, Record, load_split

# .unlabeled (mmpretrain) is imported by the MoCo configs' custom_imports only, so detection
# runs do not load mmpretrain
__all__ = ['LABELED_CLASSES', 'LABELED_PALETTE', 'LabeledDetDataset', 'LabeledDataError',
           'IndexReport', 'Record', 'load_split']
