"""Once per epoch, the count of unreadable images skipped over all ranks (UnlabeledImageFolder)."""
from mmengine.dist import all_gather_object, is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ...datasets.unreadable import CHECK_TOOL, rank_log


def _find_datasets(dataset) -> list:
    """The datasets that count unreadable images (UnlabeledImageFolder) in ``dataset`` and its
    wrappers (Concat, Repeat...)."""
    if hasattr(dataset, 'unreadable_files'):
        return [dataset]
    found = []
    for inner in list(getattr(dataset, 'datasets', [])) + [getattr(dataset, 'dataset', None)]:
        if inner is not None:
            found += _find_datasets(inner)
    return found


@HOOKS.register_module()
class UnreadableImageHook(Hook):
    """After every training epoch, log ``N unreadable images skipped so far`` (when N > 0).

    N is the number of distinct unreadable files found since the job started, over all ranks
    (their file lists are gathered, so every rank must run this hook, as it does from the
    config), with a few names, the files where the other ranks named theirs, and the command
    that finds them all.
    """

    def before_train(self, runner) -> None:
        if not _find_datasets(runner.train_dataloader.dataset):
            runner.logger.warning('UnreadableImageHook: the training dataset is not an '
                                  'UnlabeledImageFolder; nothing to report')

    def after_train_epoch(self, runner) -> None:
        datasets = _find_datasets(runner.train_dataloader.dataset)
        local = [(f, d.img_prefix) for d in datasets for f in d.unreadable_files()]
        gathered = all_gather_object(local)
        if not is_main_process():
            return
        files = sorted({f for rank in gathered for f, _ in rank})
        if files:
            folders = sorted({folder for rank in gathered for _, folder in rank})
            others = [rank_log(runner.log_dir, r) for r, found in enumerate(gathered)
                      if r and found]
            runner.logger.warning(
                f'{len(files)} unreadable images skipped so far, e.g. {", ".join(files[:3])}; '
                + (f'ranks other than 0 named theirs in {", ".join(others)}; ' if others else '')
                + 'find them all with '
                + ' and '.join(f'`{CHECK_TOOL.format(folder)}`' for folder in folders))
