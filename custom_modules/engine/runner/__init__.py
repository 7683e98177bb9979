from .checkpoint import best_checkpoint, load_best_of
from .loops import ResumableEpochBasedTrainLoop, ResumableIterBasedTrainLoop

__all__ = ['best_checkpoint', 'load_best_of', 'ResumableEpochBasedTrainLoop',
           'ResumableIterBasedTrainLoop']
