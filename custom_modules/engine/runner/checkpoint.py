"""The ``best-of://DIR`` checkpoint scheme: the peer's stages 2-4 start from the previous stage's
best-on-validation checkpoint, whose epoch is known only once that stage has run."""
import os
import os.path as osp

import torch
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from ...errors import UserError


def best_checkpoint(work_dirs) -> tuple[str, str]:
    """(path, why) of the checkpoint with the highest validation score among the ``best_*.pth``
    files of ``work_dirs``. A later stage inherits the earlier stages' best score and writes its
    own best file only when it beats them (OwnBestCheckpointHook), so this is the best over the
    whole staged schedule; the score is read from each file's training state."""
    found = []
    for work_dir in work_dirs:
        for name in sorted(os.listdir(work_dir)) if osp.isdir(work_dir) else []:
            if name.startswith('best_') and name.endswith('.pth'):
                path = osp.join(work_dir, name)
                ckpt = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
                info = ckpt.get('message_hub', {}).get('runtime_info', {})
                if 'best_score' in info:
                    meta = ckpt['meta']  # a run by iterations stays in epoch 0
                    when = (f'epoch {meta["epoch"]}' if meta.get('epoch') else
                            f'iteration {meta.get("iter", 0)}')
                    found.append((float(info['best_score']), meta.get('iter', 0), when, path))
    if not found:
        raise UserError(f'no best_*.pth checkpoint with a validation score in {", ".join(work_dirs)}'
                        ': give the checkpoint to evaluate instead (e.g. the last epoch_N.pth)')
    score, _, when, path = max(found)
    return path, (f'best validation score {score:.4f} during training, {when}, among '
                  f'{len(found)} best_*.pth in {len(work_dirs)} folders; the seed also reported '
                  'its best checkpoint')


@CheckpointLoader.register_scheme(prefixes='best-of://')
def load_best_of(filename: str, map_location=None):
    """``load_from = 'best-of://DIR[,DIR...]'``: the checkpoint that scored best on validation
    among the ``best_*.pth`` files of the folders (:func:`best_checkpoint`, as
    ``tools/test.py --best-of``): a staged schedule's folders give its best over all stages."""
    path, why = best_checkpoint(filename[len('best-of://'):].split(','))
    print_log(f'{filename}: {path} ({why})', logger='current')
    return CheckpointLoader.load_checkpoint(path, map_location)
