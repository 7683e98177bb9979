"""What a checkpoint file is, so that every tool refuses a wrong file the same way."""
import os.path as osp

import torch

from custom_modules.errors import UserError


def load_state_dict_file(path: str) -> dict:
    """A checkpoint file's state_dict: its 'state_dict' entry, or the file itself if it is one."""
    if not osp.isfile(path):
        raise UserError(f'{path}: checkpoint file does not exist')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # not a torch.save file (truncated, text, another framework's)
        raise UserError(f'{path} is not a PyTorch checkpoint file '
                        f'({type(e).__name__}: {e})') from e
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise UserError(f'{path} is not a checkpoint with a state_dict')
    return state


def checkpoint_kind(state: dict) -> str:
    """What wrote a state_dict, from its key prefixes (DDP's 'module.' ignored):

    'mmdet'                 an mmdet detector (rpn_head.* / roi_head.*), whatever its backbone:
                            a ResNet (backbone.layer1.*) or a ViT (backbone.patch_embed.*,
                            backbone.layers.N.*, e.g. the configs/vitdet models)
    'mmdet-semi'            a semi-supervised detector (configs/soft_teacher): a teacher and a
                            student detector (teacher.roi_head.*, student.roi_head.*)
    'torchvision-detector'  a torchvision Faster R-CNN (roi_heads.*, backbone.body.*)
    'fb-moco'               facebookresearch/moco (encoder_q.*, encoder_k.*, queue)
    'mmpretrain-densecl'    mmpretrain DenseCL (backbone.*, neck.*, encoder_k.*, queue, queue2)
    'mmpretrain-moco'       mmpretrain MoCo (backbone.*, neck.*, encoder_k.* or
                            momentum_encoder.*, queue)
    'mmpretrain-mae'        mmpretrain MAE (backbone.*: the ViT encoder; neck.*: the decoder
                            with neck.mask_token, neck.decoder_*)
    'backbone'              backbone.* without any of those (e.g. an mmpretrain classifier)
    'torchvision-resnet'    a torchvision ResNet state_dict (conv1.*, bn1.*, layer1.*, ...; fc.*
                            or not), e.g. tools/model_converters/mocov2_to_torchvision.py's output
    'unknown'               anything else

    The tools that refuse a wrong file use this, so they agree on what a file is."""
    keys = [k[len('module.'):] if k.startswith('module.') else k for k in state]

    def has(*prefixes):
        return any(k.startswith(prefixes) for k in keys)

    if has('rpn_head.', 'roi_head.'):
        return 'mmdet'
    if has('teacher.roi_head.') and has('student.roi_head.'):
        return 'mmdet-semi'
    if has('roi_heads.'):
        return 'torchvision-detector'
    if has('encoder_q.'):
        return 'fb-moco'
    if has('backbone.'):
        if 'queue2' in keys or has('neck.mlp2.'):  # DenseCL's dense (per-location) branch
            return 'mmpretrain-densecl'
        if 'neck.mask_token' in keys or has('neck.decoder_'):  # MAE's pixel decoder
            return 'mmpretrain-mae'
        return ('mmpretrain-moco' if has('encoder_k.', 'momentum_encoder.') or 'queue' in keys
                else 'backbone')
    if 'conv1.weight' in keys and has('bn1.') and has('layer1.'):
        return 'torchvision-resnet'
    return 'unknown'


KIND_NAMES = {
    'mmdet': 'mmdet detector checkpoint',
    'mmdet-semi': 'semi-supervised (teacher and student) detector checkpoint',
    'torchvision-detector': 'torchvision Faster R-CNN checkpoint',
    'fb-moco': 'facebookresearch/moco checkpoint',
    'mmpretrain-densecl': 'mmpretrain DenseCL checkpoint',
    'mmpretrain-moco': 'mmpretrain MoCo checkpoint',
    'mmpretrain-mae': 'mmpretrain MAE checkpoint',
    'backbone': 'backbone.* checkpoint',
    'torchvision-resnet': 'torchvision ResNet state_dict',
    'unknown': 'unrecognized checkpoint',
}

DETECTOR_KINDS = ('mmdet', 'torchvision-detector')

# where the backbone sits in each kind of file, DDP's 'module.' aside ('' = the whole
# state_dict is the ResNet)
_BACKBONE_PREFIX = {
    'mmpretrain-moco': 'backbone.',     # the query encoder; encoder_k.module.0.* is the key one
    'mmpretrain-densecl': 'backbone.',
    'mmpretrain-mae': 'backbone.',      # the ViT encoder; neck.* is the pixel decoder
    'backbone': 'backbone.',
    'fb-moco': 'encoder_q.',            # torchvision names; encoder_q.fc.* is the MLP head
    'torchvision-resnet': '',
    'mmdet': 'backbone.',
    'torchvision-detector': 'backbone.body.',  # backbone.fpn.* is the FPN
}


def backbone_prefix(kind: str, state: dict | None = None) -> str | None:
    """The ``init_cfg=dict(type='Pretrained', prefix=...)`` that selects the backbone of a
    file of this kind: 'backbone.' (mmpretrain MoCo / DenseCL / MAE, backbone.* files, mmdet
    detectors), 'module.encoder_q.' (facebookresearch/moco), 'backbone.body.' (torchvision
    detectors), None for a torchvision ResNet (mmengine then loads the whole state_dict into
    the backbone with strict=False, stripping a leading 'module.'; fc.* are unexpected keys,
    logged and ignored).

    With ``state``, the prefix gets DDP's 'module.' exactly when the file's keys have it
    (mmengine's prefix loading does not strip it); without, only fb-moco's has it, as
    facebookresearch/moco always saves its DDP-wrapped model. Raises ValueError for 'unknown'.
    """
    if kind not in _BACKBONE_PREFIX:
        raise ValueError(f'no known backbone prefix for a checkpoint of kind {kind!r}')
    if state is None:
        ddp = kind == 'fb-moco'
    else:
        ddp = bool(state) and all(k.startswith('module.') for k in state)
    prefix = ('module.' if ddp else '') + _BACKBONE_PREFIX[kind]
    return prefix or None


# ViTDet's relative-position tables (WindowedViT): a plain ViT's file (MAE's) has none; they
# start at zero
OPTIONAL_BACKBONE_TENSORS = ('.rel_pos_h', '.rel_pos_w')


def backbone_tensor_fits(name: str, file_shape: tuple, model_shape: tuple) -> bool:
    """Whether a backbone tensor of ``file_shape`` initializes the model's tensor ``name`` of
    ``model_shape``: the same shape, or a position embedding of the same width that the model
    interpolates to its patch grid when loading: a plain ViT's (1, 1 + H*W, C), e.g. MAE's at
    224 px, into mmpretrain's VisionTransformer (1, 1 + H'*W', C) or WindowedViT (1, H', W', C);
    a (1, H, W, C) grid into WindowedViT."""
    if tuple(file_shape) == tuple(model_shape):
        return True
    return (name == 'pos_embed' and file_shape[0] == model_shape[0] == 1
            and file_shape[-1] == model_shape[-1]
            and (len(file_shape) == 3 and len(model_shape) in (3, 4)
                 or len(file_shape) == len(model_shape) == 4))


def check_detector_checkpoint(path: str) -> str:
    """Refuse anything but an mmdet detector checkpoint, saying what the file is and what to do
    with it; return its kind ('mmdet' or 'mmdet-semi')."""
    state = load_state_dict_file(path)
    kind = checkpoint_kind(state)
    if kind in ('mmdet', 'mmdet-semi'):
        return kind
    if kind == 'torchvision-detector':
        raise UserError(
            f"{path} is a torchvision Faster R-CNN (e2e) checkpoint, e.g. the seed's. Convert it "
            f'first: python tools/model_converters/torchvision_frcnn_to_mmdet.py {path} OUT.pth, '
            'then evaluate OUT.pth with '
            'configs/faster_rcnn/faster-rcnn_r50-tv-e2e_fpn_1xb2_labeled-val.py.')
    if kind == 'fb-moco':
        what = 'a facebookresearch/moco backbone checkpoint (keys module.encoder_q.*)'
    elif kind == 'mmpretrain-mae':
        what = ('an MAE pretraining checkpoint (backbone.*: a ViT encoder, neck.*: its pixel '
                'decoder; no rpn_head.* / roi_head.*), the --pretrained file of the '
                'configs/vitdet/ fine-tuning')
    elif kind in ('mmpretrain-moco', 'mmpretrain-densecl', 'backbone'):
        what = ('a backbone-only checkpoint (e.g. MoCo pretraining: backbone.*, neck.*, no '
                'rpn_head.* / roi_head.*)')
    elif kind == 'torchvision-resnet':
        what = ('a backbone-only checkpoint: a torchvision ResNet state_dict (conv1.*, '
                'layer1-4.*), e.g. from mocov2_to_torchvision.py')
    else:
        what = f'not an mmdet detector checkpoint (first keys: {list(state)[:3]})'
    raise UserError(f'{path} is {what}. Evaluation needs a full detector checkpoint written by '
                    'tools/train.py with a Faster R-CNN config (e.g. work_dirs/<config>/'
                    'epoch_37.pth); backbone checkpoints are for --pretrained when training.')


def choose_semi_model(cfg, config: str, checkpoint: str, kind: str,
                      predict_on: str | None) -> str | None:
    """Which of a semi-supervised config's two detectors predicts (``predict_on``: 'teacher',
    'student' or None for the config's, the teacher), set in ``cfg``; return the line that says
    so, or None for a config with one detector. A UserError for --predict-on with a plain config,
    or a teacher+student checkpoint (``kind`` 'mmdet-semi') with one."""
    semi = cfg.model.get('semi_test_cfg')
    if predict_on and semi is None:
        raise UserError(f'{config} is not semi-supervised: it has one model, no teacher or '
                        'student; leave --predict-on out')
    if semi is None:
        if kind == 'mmdet-semi':
            raise UserError(f'{checkpoint} holds a teacher and a student detector (a '
                            'semi-supervised run): use it with its configs/soft_teacher config')
        return None
    semi.predict_on = predict_on or semi.get('predict_on', 'teacher')
    return f'model: the {semi.predict_on}' + (
        ' (the exponential moving average of the student, which Soft Teacher reports; '
        '--predict-on student for the other)' if semi.predict_on == 'teacher' else
        ' (the model trained by gradient steps; the default is the teacher)')


def checkpoint_classes(path: str) -> tuple | None:
    """The class names a detector checkpoint was trained on (the training dataset's metainfo,
    which mmengine saves in its meta), or None for a file without them (e.g. a converted one)."""
    ckpt = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    classes = ((meta if isinstance(meta, dict) else {}).get('dataset_meta') or {}).get('classes')
    return tuple(classes) if classes else None


def class_list(classes, most: int = 4) -> str:
    shown = ', '.join(repr(c) for c in classes[:most])
    return f'{len(classes)} classes ({shown}{", ..." if len(classes) > most else ""})'


def check_checkpoint_classes(path: str, data_classes, data_name: str) -> tuple | None:
    """Refuse a checkpoint trained on another class list than the data it is used with; returns
    the checkpoint's classes (None when it does not record them)."""
    classes = checkpoint_classes(path)
    if classes is not None and classes != tuple(data_classes):
        raise UserError(f'{path} was trained on {class_list(classes)}, but {data_name} has '
                        f'{class_list(tuple(data_classes))}: use a checkpoint trained on this '
                        'data, or the data it was trained on')
    return classes
