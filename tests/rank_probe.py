"""Test-only hook, loaded into training subprocesses with
``--cfg-options "custom_imports.imports=[custom_modules,rank_probe]"`` (tests/ on PYTHONPATH):
each rank writes what it trained on and a digest of its final weights."""
import hashlib
import json
import os
import sys

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankProbeHook(Hook):
    priority = 'LOWEST'

    def before_train(self, runner):
        self.samples, self.lrs = [], {}

    def before_train_epoch(self, runner):
        self.lrs[runner.epoch] = runner.optim_wrapper.get_lr()['lr'][0]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for s in data_batch['data_samples']:
            meta = s.metainfo if hasattr(s, 'metainfo') else {}
            self.samples.append(str(meta.get('img_id', meta.get('img_path', '?'))))

    def after_train(self, runner):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        h = hashlib.sha256()
        # parameters only: BatchNorm running statistics are per-rank by design (DDP with
        # broadcast_buffers=False), and rank 0's are the ones saved
        for name, t in sorted(model.named_parameters()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        out = dict(rank=get_rank(), world_size=get_world_size(), samples=self.samples,
                   lrs=self.lrs, weights=h.hexdigest(), epoch=runner.epoch, iter=runner.iter,
                   master_port=os.environ.get('MASTER_PORT'),
                   # squashfs indexes this process built (the others mapped the cached one)
                   index_builds=getattr(sys.modules.get('custom_modules.fileio.squashfs'),
                                        'build_count', 0))
        with open(os.path.join(runner.work_dir, f'rank{get_rank()}.json'), 'w') as f:
            json.dump(out, f)
