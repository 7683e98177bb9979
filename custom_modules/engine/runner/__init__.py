from .checkpoint import best_checkpoint, load_best_of
from .loops import ResumableEpochBasedTrainLoop

__all__ = ['best_checkpoint', 'load_best_of', 'ResumableEpochBasedTrainLoop']
