"""Convert the seed's torchvision Faster R-CNN checkpoint to an mmdet checkpoint.

    python tools/model_converters/torchvision_frcnn_to_mmdet.py best_e2e_checkpoint.pth.tar OUT.pth
        [--labels course|plus-one] [--config CONFIG]

IN is the seed's e2e file ``{'epoch', 'arch', 'backbone_path', 'state_dict', 'optimizer'}``: a
torchvision ``FasterRCNN`` (ResNet-50 FPN, 101 classes, background at index 0), keys with or
without DDP's ``module.`` prefix, torchvision >= 0.13 names (``fpn.inner_blocks.0.0``,
``rpn.head.conv.0.0``) or older ones (``fpn.inner_blocks.0``, ``rpn.head.conv``). OUT is for
``configs/faster_rcnn/faster-rcnn_r50-tv-e2e_fpn_1xb2_labeled-val.py`` (mmdet Faster R-CNN,
100 classes, background last). Every source tensor is used and every key of that config's model
is written, or the conversion fails naming what is left over or missing.

``--labels`` says how the seed numbered the classes:
  course    (default) the course's ``LabeledDataset`` (dataset.py, "do not change this file"),
            which the seed's README names: class i of the course table -> label i, 0..99. Label 0
            (cup or mug) then doubles as torchvision's background and was learnt as background,
            and output 100 never had a ground-truth box. mmdet class i <- torchvision i for
            1..99; mmdet class 0 <- torchvision 100, so each softmax keeps the same 101 logits
            (torchvision's label-100 boxes come out as class 0, which the seed's evaluation
            ignored; cup or mug was never detected there).
  plus-one  labels i + 1: mmdet class i <- torchvision i + 1.
The printed box-regression weight norms help tell which: the rows of an output that never had a
ground-truth box get no gradient, only weight decay, and stay small like the background's (0).
"""
import argparse
import os.path as osp
import re
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/: the toolkit
from toolkit import bootstrap  # noqa: E402

ROOT = bootstrap.setup()

from mmengine.config import Config  # noqa: E402
from mmengine.registry import DefaultScope, init_default_scope  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402

import custom_modules  # noqa: E402,F401  (the config's TorchvisionAnchorGenerator)
from toolkit.checkpoints import checkpoint_kind, load_state_dict_file  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'faster_rcnn',
                          'faster-rcnn_r50-tv-e2e_fpn_1xb2_labeled-val.py')
NUM_CLASSES = 100  # + background

# torchvision key (after 'module.') -> mmdet key; old (< 0.13) and new FPN/RPN names both map
RULES = [
    (r'backbone\.body\.(.+)', r'backbone.\1'),
    (r'backbone\.fpn\.inner_blocks\.(\d)\.(?:0\.)?(weight|bias)', r'neck.lateral_convs.\1.conv.\2'),
    (r'backbone\.fpn\.layer_blocks\.(\d)\.(?:0\.)?(weight|bias)', r'neck.fpn_convs.\1.conv.\2'),
    (r'rpn\.head\.conv\.(?:0\.0\.)?(weight|bias)', r'rpn_head.rpn_conv.\1'),
    (r'rpn\.head\.cls_logits\.(weight|bias)', r'rpn_head.rpn_cls.\1'),
    (r'rpn\.head\.bbox_pred\.(weight|bias)', r'rpn_head.rpn_reg.\1'),
    (r'roi_heads\.box_head\.fc6\.(weight|bias)', r'roi_head.bbox_head.shared_fcs.0.\1'),
    (r'roi_heads\.box_head\.fc7\.(weight|bias)', r'roi_head.bbox_head.shared_fcs.1.\1'),
    (r'roi_heads\.box_predictor\.cls_score\.(weight|bias)', r'roi_head.bbox_head.fc_cls.\1'),
    (r'roi_heads\.box_predictor\.bbox_pred\.(weight|bias)', r'roi_head.bbox_head.fc_reg.\1'),
]


def torchvision_index_of_class(labels: str) -> list[int]:
    """For each mmdet class 0..99, the torchvision output index it takes its weights from."""
    if labels == 'course':
        return [NUM_CLASSES] + list(range(1, NUM_CLASSES))
    if labels == 'plus-one':
        return list(range(1, NUM_CLASSES + 1))
    raise ValueError(f'--labels {labels}: expected course or plus-one')


def load_torchvision_state(path: str) -> dict:
    """The seed checkpoint's state_dict without the DDP prefix; refuses anything else, saying
    what the file is."""
    state = load_state_dict_file(path)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{path} is not a checkpoint with a state_dict of tensors')
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    kind = checkpoint_kind(state)
    if kind == 'fb-moco':
        what = ('a facebookresearch/moco pretraining checkpoint (module.encoder_q.*): a backbone, '
                'not a detector. Fine-tune from it with tools/train.py CONFIG --pretrained PATH '
                '--cfg-options model.backbone.init_cfg.prefix=module.encoder_q.')
    elif kind == 'mmdet':
        what = 'already an mmdet detector checkpoint: evaluate it with tools/test.py directly'
    elif kind == 'mmpretrain-moco':
        what = ('an mmpretrain MoCo checkpoint (backbone.*, neck.*, key encoder, queue): a '
                'backbone for tools/train.py --pretrained, not a detector')
    elif any(k.startswith(('roi_heads.mask_predictor.', 'roi_heads.keypoint_predictor.'))
             for k in state):
        what = 'a torchvision Mask/Keypoint R-CNN checkpoint, not a Faster R-CNN one'
    elif 'roi_heads.box_predictor.cls_score.weight' not in state:
        what = f'not a torchvision Faster R-CNN checkpoint (first keys: {list(state)[:3]})'
    else:
        n = state['roi_heads.box_predictor.cls_score.weight'].shape[0]
        if n == NUM_CLASSES + 1:
            return state
        what = (f'a torchvision Faster R-CNN with {n} outputs (classes + background), not '
                f'{NUM_CLASSES + 1}: not a model of the labeled set')
    raise ValueError(f'{path} is {what}.')


def convert(state: dict, labels: str = 'course') -> dict:
    """mmdet state_dict from a torchvision FasterRCNN state_dict (no 'module.' prefix)."""
    out, leftover = {}, []
    for key, value in state.items():
        for pattern, repl in RULES:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            leftover.append(key)
    if leftover:
        raise ValueError(f'{len(leftover)} source tensors have no mmdet counterpart '
                         f'(not a ResNet-50 FPN Faster R-CNN?): {leftover[:5]}')
    src = torchvision_index_of_class(labels)
    head = 'roi_head.bbox_head.'
    for name in ('weight', 'bias'):
        # mmdet: classes 0..99 then background; torchvision: background 0 then its outputs
        out[head + 'fc_cls.' + name] = out[head + 'fc_cls.' + name][src + [0]].clone()
        reg = out[head + 'fc_reg.' + name]
        out[head + 'fc_reg.' + name] = reg.view(NUM_CLASSES + 1, 4, *reg.shape[1:])[src] \
            .reshape(NUM_CLASSES * 4, *reg.shape[1:]).clone()
    # FrozenBatchNorm2d has no num_batches_tracked; mmdet's BatchNorm2d wants one (unused in eval)
    for key in [k for k in out if k.endswith('.running_var')]:
        out.setdefault(key.replace('running_var', 'num_batches_tracked'),
                       torch.tensor(0, dtype=torch.long))
    return out


def regression_norms(state: dict) -> str:
    """Norms of the class-specific box-regression weights at torchvision indices 0, 1..99, 100."""
    w = state['roi_heads.box_predictor.bbox_pred.weight'].view(NUM_CLASSES + 1, -1).norm(dim=1)
    return (f'box-regression weight norm per torchvision output: background (0) {w[0]:.4g}, '
            f'1..99 median {w[1:NUM_CLASSES].median():.4g}, 100: {w[NUM_CLASSES]:.4g}')


def check_against_model(out: dict, config: str) -> int:
    """Load into the model the config builds: every key must be produced, none left over."""
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        init_default_scope(cfg.default_scope)
        model = MODELS.build(cfg.model)
    missing, unexpected = model.load_state_dict(out, strict=False)
    if missing or unexpected:
        raise ValueError(f'converted weights do not fit {osp.basename(config)}: missing '
                         f'{missing[:5]}, unexpected {unexpected[:5]}')
    return len(model.state_dict())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('src', help="the seed's e2e checkpoint, e.g. best_e2e_checkpoint.pth.tar")
    p.add_argument('dst', help='mmdet checkpoint to write')
    p.add_argument('--labels', choices=('course', 'plus-one'), default='course',
                   help="how the seed's training labels were numbered (see above)")
    p.add_argument('--config', default=DEFAULT_CONFIG, help='model to check the result against')
    args = p.parse_args(argv)
    try:
        state = load_torchvision_state(args.src)
        out = convert(state, args.labels)
        n_target = check_against_model(out, args.config)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    torch.save(dict(meta=dict(converted_from=osp.abspath(args.src), labels=args.labels),
                    state_dict=out), args.dst)
    added = len(out) - len(state)
    print(f'{args.src}: all {len(state)} tensors used; all {n_target} keys of the mmdet model '
          f'written to {args.dst}'
          + (f' ({added} BatchNorm num_batches_tracked counters, which FrozenBatchNorm2d lacks)'
             if added else '')
          + f'\nlabels: {args.labels}; {regression_norms(state)}')


if __name__ == '__main__':
    main()
