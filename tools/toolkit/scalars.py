"""The scalar log tools/train.py writes (mmengine's LoggerHook: WORK_DIR/<timestamp>/vis_data/
scalars.json, one file per run of the folder), read for the curves and for --best-of."""
import glob
import json
import os.path as osp

from custom_modules.errors import UserError


def read_scalars(work_dir: str) -> tuple[dict, dict]:
    """(training, validation): name -> {step: value}; training steps are iterations, validation
    steps epochs. The runs of a resumed folder are read oldest first, so a later run's value at
    the same step wins."""
    files = (sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
             or glob.glob(osp.join(work_dir, 'vis_data', 'scalars.json')))  # one run's folder
    if not files:
        raise UserError(f'{work_dir}: no <timestamp>/vis_data/scalars.json (the scalar log that '
                        'tools/train.py writes in its work folder)')
    train, val = {}, {}
    for path in files:
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a run killed while writing leaves half a line
                    continue
                # mmengine's LoggerHook: training records carry the iteration, validation
                # records only the epoch (as 'step')
                scalars, x = (train, record['iter']) if 'iter' in record else (val, record['step'])
                for name, value in record.items():
                    if name not in ('step', 'iter', 'epoch'):
                        scalars.setdefault(name, {})[x] = value
    return train, val


def last_validation(work_dirs, key: str):
    """(epoch, value) of ``key`` at the last validated epoch of the last folder in ``work_dirs``
    that validated at all (a staged schedule's folders in order: its end), or None."""
    for work_dir in reversed(list(work_dirs)):
        try:
            _, val = read_scalars(work_dir)
        except UserError:
            continue
        scores = val.get(key)
        if scores:
            epoch = max(scores)
            return epoch, scores[epoch]
    return None
