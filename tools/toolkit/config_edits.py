"""Config edits shared by tools/train.py and tools/test.py (data folder, backbone checkpoint,
work folder).

They set the evaluated config fields directly: a top-level variable such as ``data_root`` is
substituted when the config file is read, so overriding it afterwards changes nothing.
"""
import os.path as osp
import re

from mmengine.config import Config

from custom_modules.errors import UserError

from .checkpoints import (DETECTOR_KINDS, KIND_NAMES, OPTIONAL_BACKBONE_TENSORS,
                                        backbone_prefix, backbone_tensor_fits, checkpoint_kind,
                                        class_list, load_state_dict_file)


def default_work_dir(config_path: str) -> str:
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def merge_cfg_options(cfg: Config, options: dict) -> None:
    """mmengine's ``--cfg-options`` merge, with a ``best-of://`` list of folders (DictAction
    splits a value at its commas) joined back into the one string the scheme reads."""
    cfg.merge_from_dict(options)
    load_from = cfg.get('load_from')
    if isinstance(load_from, (list, tuple)) and str(load_from[0]).startswith('best-of://'):
        cfg.load_from = ','.join(map(str, load_from))


def dataloader_datasets(cfg: Config, names=('train_dataloader', 'val_dataloader',
                                            'test_dataloader')):
    for name in names:
        loader = cfg.get(name)
        if loader:
            yield from leaf_datasets(loader['dataset'])


def leaf_datasets(ds):
    """The datasets that read files, inside wrappers (``dataset``) and concatenations
    (``datasets``: the semi-supervised stage's labeled and unlabeled sets)."""
    if ds.get('datasets'):
        for part in ds['datasets']:
            yield from leaf_datasets(part)
    elif ds.get('dataset'):
        yield from leaf_datasets(ds['dataset'])
    else:
        yield ds


UNLABELED_TYPES = ('UnlabeledDetDataset',)


def set_data_root(cfg: Config, data_root: str, names=None) -> None:
    """Point every dataloader (or those in ``names``) at another dataset folder, or at a
    squashfs image or a folder inside one (data_source.describe). COCO-format data
    (``annotations/instances_*.json``) is read by the COCO dataset type."""
    from .data_source import describe
    source = describe(data_root)
    for ds in (dataloader_datasets(cfg, names) if names else dataloader_datasets(cfg)):
        if ds.get('type') in UNLABELED_TYPES:
            continue  # set_unlabeled_root
        ds['data_root'] = source.root
        if source.is_coco:
            _to_coco(ds)
    cfg.data_root = source.root


def set_unlabeled_root(cfg: Config, root: str) -> None:
    """Point the unlabeled set of a semi-supervised config at another image folder (or a
    ``.sqsh`` image, or a folder inside one)."""
    from .data_source import describe
    found = [ds for ds in dataloader_datasets(cfg, ('train_dataloader',))
             if ds.get('type') in UNLABELED_TYPES]
    if not found:
        raise UserError(f'{cfg.filename} trains on no unlabeled images: --unlabeled is for the '
                        'semi-supervised configs (configs/soft_teacher)')
    path = describe(root, '--unlabeled').root
    for ds in found:
        ds['data_root'] = path
    cfg.unlabeled_root = path


# LabeledDetDataset's own arguments, which mmdet's CocoDataset does not take
_COURSE_ONLY = ('index_cache_dir', 'use_index_cache', 'num_index_workers')


def _to_coco(ds) -> None:
    if ds.get('type') in ('LabeledDetDataset', 'CocoFormatDataset'):
        ds['type'] = 'CocoFormatDataset'
        for k in _COURSE_ONLY:
            ds.pop(k, None)


def set_coco_files(cfg: Config, name: str, ann_file: str, img_dir: str) -> None:
    """The ``name`` dataloader reads a COCO annotation file with its images in ``img_dir``
    (the explicit form of a COCO ``--data-root``, for any other layout)."""
    if not cfg.get(name):
        why = ('it does not validate during training; evaluate with tools/test.py --coco ANN '
               'IMAGES' if name == 'val_dataloader' else 'an evaluation-only config')
        raise UserError(f'{cfg.filename} has no {name} ({why}): leave out the COCO option for it')
    ds = cfg[name]['dataset']
    if ds.get('type') not in ('LabeledDetDataset', 'CocoFormatDataset'):
        raise UserError(f'{cfg.filename} does not read labeled detection data ({name}: '
                        f'{ds.get("type")}): the COCO options are for the detection configs')
    _to_coco(ds)
    ds['data_root'] = ''
    ds['ann_file'] = osp.abspath(ann_file)
    ds['data_prefix'] = dict(img=osp.abspath(img_dir) + '/')


# the evaluator that scores each dataloader's predictions
_EVALUATORS = {'val_dataloader': 'val_evaluator', 'test_dataloader': 'test_evaluator'}


def _score_against_the_file(cfg: Config, name: str, ann: str, classes: tuple,
                            file_classes: tuple) -> None:
    """The COCO metric of ``name`` reads its ground truth from the annotation file itself, as
    pycocotools' COCOeval on that file does: its areas (a segmentation's, not the box's), crowd
    regions and every box, instead of ground truth rebuilt from the boxes the dataset kept.
    The metric maps label k to the k-th of the classes in the file's order: a metainfo subset in
    another order keeps the rebuilt ground truth."""
    if list(classes) != [c for c in file_classes if c in classes]:
        return
    evaluators = cfg.get(_EVALUATORS.get(name, ''))
    if not evaluators:
        return
    for ev in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
        if 'CocoMetric' in str(ev.get('type', '')):
            ev['ann_file'] = ann


def setup_coco(cfg: Config, names=('train_dataloader', 'val_dataloader', 'test_dataloader'),
               check_files: bool = True):
    """For the COCO-format datasets among ``names``: read and check each annotation file (a
    UserError naming the file and the entry, before anything is built), make its path absolute
    (the training record hashes it), and give the detector the file's number of classes.
    Returns the class names, or None when no dataset is COCO. All of them must share one
    category list."""
    from custom_modules.datasets.coco_det import (ANN_FILE, CocoDataError, coco_splits,
                                                  missing_images, read_coco)
    found = []
    coco_sets = [(name, ds) for name in names for ds in dataloader_datasets(cfg, (name,))
                 if ds.get('type') == 'CocoFormatDataset']
    for name, ds in coco_sets:
        root, split = ds.get('data_root') or '', ds.get('split', 'training')
        ann = ds.get('ann_file') or ANN_FILE.format(split=split)
        ann = ann if osp.isabs(ann) else osp.join(root, ann)
        img_dir = (ds.get('data_prefix') or {}).get('img') or f'{split}/'
        img_dir = img_dir if osp.isabs(img_dir) else osp.join(root, img_dir)
        if not osp.isfile(ann):
            have = coco_splits(root) if root and osp.isdir(osp.join(root, 'annotations')) else []
            raise UserError(f'{ann} does not exist ({name}, split {split!r}); '
                            + (f'{root} has the splits {", ".join(have)}: pass --split (test.py) '
                               f'or --cfg-options {name}.dataset.split=NAME' if have else
                               'give the COCO annotation file and image folder explicitly'))
        try:
            coco = read_coco(ann)
        except CocoDataError as e:
            raise UserError(str(e)) from e
        if not coco.classes:
            raise UserError(f'{ann}: "categories" is empty')
        if check_files:
            missing = missing_images(coco.data['images'], img_dir)
            if missing:
                i, img_id, path = missing[0]
                raise UserError(f'{ann}: images[{i}] (id {img_id}): file {path} does not exist'
                                + (f' ({len(missing)} images missing in all)'
                                   if len(missing) > 1 else ''))
        ds['ann_file'] = osp.abspath(ann)
        ds['data_prefix'] = dict(img=osp.abspath(img_dir) + '/')
        ds['data_root'] = ''
        classes = tuple((ds.get('metainfo') or {}).get('classes') or coco.classes)
        _score_against_the_file(cfg, name, ds['ann_file'], classes, coco.classes)
        found.append((name, ann, classes))
    if not found:
        return None
    (_, first_ann, classes), *others = found
    for name, ann, other in others:
        if other != classes:
            raise UserError(f'{ann} ({name}) has other classes than {first_ann}: '
                            f'{class_list(other)} vs {class_list(classes)}')
    set_num_classes(cfg, len(classes))
    return classes


def set_num_classes(cfg: Config, n: int) -> None:
    # a semi-supervised model (configs/soft_teacher) wraps the detector its teacher and student copy
    heads = cfg.model.get('detector', cfg.model).roi_head.bbox_head
    for head in heads if isinstance(heads, (list, tuple)) else [heads]:
        head['num_classes'] = n


def set_pretrained(cfg: Config, path: str, backbone_from_detector: bool = False) -> str:
    """Backbone checkpoint for a detection config: reads the file once, finds what wrote it
    (toolkit.checkpoints.checkpoint_kind), sets model.backbone.init_cfg.checkpoint and
    .prefix to select its ResNet, and returns a one-line description for the tool to print.

    Raises UserError, naming what the file is and what to do, for an unrecognized file, for a
    detector checkpoint unless ``backbone_from_detector`` (--backbone-from-detector), and for a
    file whose backbone tensors do not cover the backbone the config builds (every parameter and
    BatchNorm statistic by name and shape; e.g. a ResNet-18, or a stage missing)."""
    init_cfg = cfg.model.get('backbone', {}).get('init_cfg')
    if not init_cfg or init_cfg.get('type') != 'Pretrained':
        raise UserError('--pretrained: this config has no Pretrained backbone init_cfg '
                        '(stage 2/3 configs resume from the previous stage instead)')
    if not osp.isfile(path):
        raise UserError(f'--pretrained {path}: file does not exist')
    state = load_state_dict_file(path)
    kind = checkpoint_kind(state)
    name = KIND_NAMES[kind]
    if kind == 'unknown':
        raise UserError(
            f'--pretrained {path}: not a backbone checkpoint of a known layout (first keys: '
            f'{list(state)[:3]}). It takes an mmpretrain MoCo/DenseCL/MAE checkpoint (backbone.*), '
            'a facebookresearch/moco checkpoint (module.encoder_q.*), a torchvision ResNet-50 '
            'state_dict (conv1.*, layer1-4.*; e.g. from mocov2_to_torchvision.py), or with '
            '--backbone-from-detector a detector checkpoint. For another layout give '
            '--cfg-options model.backbone.init_cfg.checkpoint=PATH '
            'model.backbone.init_cfg.prefix=<the backbone\'s key prefix>.')
    if kind in DETECTOR_KINDS and not backbone_from_detector:
        other_uses = ('to evaluate it use tools/test.py; to continue its training, '
                      'tools/train.py --resume PATH' if kind == 'mmdet' else
                      'to evaluate it convert it first with '
                      'tools/model_converters/torchvision_frcnn_to_mmdet.py')
        raise UserError(
            f'--pretrained {path}: this is {_a(name)} (backbone, neck and heads), not a '
            'pretrained backbone. To start fine-tuning from its backbone alone (neck and heads '
            f'initialized afresh) add --backbone-from-detector; {other_uses}.')
    prefix = backbone_prefix(kind, state)
    expected = _backbone_shapes(cfg)
    if prefix is None:  # mmengine's load_checkpoint: the whole state_dict, 'module.' stripped
        found = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    else:
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    where = f'{prefix}*' if prefix else 'the whole state_dict'
    backbone = cfg.model.backbone
    backbone_type = f"{backbone.get('type')}-{backbone.get('depth', backbone.get('arch', '?'))}"
    required = [k for k in expected
                if not k.endswith(('num_batches_tracked',) + OPTIONAL_BACKBONE_TENSORS)]
    missing = [k for k in required if k not in found]
    other_shape = [k for k in required if k in found and not backbone_tensor_fits(
        k, tuple(getattr(found[k], 'shape', ())), expected[k])]
    if missing or other_shape:
        problems = []
        if missing:
            problems.append(f'{len(missing)} of its {len(required)} tensors missing '
                            f'({_groups(missing)})')
        if other_shape:
            k = other_shape[0]
            problems.append(f'{len(other_shape)} with another shape (e.g. {k}: '
                            f'{tuple(getattr(found[k], "shape", ()))} in the file, '
                            f'{expected[k]} in the model)')
        raise UserError(
            f'--pretrained {path}: {_a(name)}, but {where} does not fit the config\'s '
            f'{backbone_type} backbone: {"; ".join(problems)}. Is it another depth (e.g. a '
            'ResNet-18) or an incomplete file?')
    init_cfg['checkpoint'] = path
    init_cfg['prefix'] = prefix
    cfg.pretrained = path
    loaded = [k for k in expected if k in found]
    notes = []
    unused_inside = [k for k in found if k not in expected]
    if unused_inside:
        notes.append(_groups(unused_inside, prefix or ''))
    if prefix:
        outside = [k for k in state if not k.startswith(prefix)]
        if outside:
            notes.append(_groups(outside, '', prefix))
    text = f'--pretrained {path}: {name}, backbone from {where} ({len(loaded)} tensors'
    if notes:
        text += '; not used: ' + ', '.join(notes)
    resized = [k for k in loaded if tuple(found[k].shape) != expected[k]]
    for k in resized:
        text += f'; {k} {tuple(found[k].shape)} interpolated to {expected[k]}'
    absent = len([k for k in expected if k not in found and k.endswith('num_batches_tracked')])
    if absent:
        text += (f'; {absent} BatchNorm num_batches_tracked counters absent, left at 0 '
                 '(unused: BatchNorm has a momentum)')
    absent = len([k for k in expected if k not in found and k.endswith(OPTIONAL_BACKBONE_TENSORS)])
    if absent:
        text += f'; {absent} relative-position tables absent, start at zero'
    return text + ')'


def _a(name: str) -> str:
    return ('an ' if name.startswith(('mm', 'un', 'a', 'e', 'i', 'o')) else 'a ') + name


def _backbone_shapes(cfg: Config) -> dict:
    """Name -> shape of every tensor in the state_dict of the backbone the config builds
    (built on the meta device: no memory, no initialization)."""
    import copy

    import torch
    from mmengine.registry import MODELS, DefaultScope
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg['init_cfg'] = None
    scope = cfg.get('default_scope') or 'mmdet'
    with DefaultScope.overwrite_default_scope(scope):  # the caller's scope left as it was
        try:
            with torch.device('meta'):
                backbone = MODELS.build(backbone_cfg)
        except Exception:  # a module that computes on its tensors when built
            backbone = MODELS.build(backbone_cfg)
    return {k: tuple(v.shape) for k, v in backbone.state_dict().items()}


def _groups(keys, prefix: str = '', outside_of: str = '', most: int = 6) -> str:
    """Key names summarized by module, ``prefix`` put back: 'layer4.* (150)', 'module.queue'.
    ``outside_of``: keys that are not under this prefix, grouped where they leave it
    ('module.encoder_k.*' beside 'module.encoder_q.', 'backbone.fpn.*' beside 'backbone.body.')."""
    shared = outside_of.rstrip('.').split('.') if outside_of else []
    groups = {}
    for k in keys:
        parts = k.split('.')
        n = 0
        while n < len(shared) and n < len(parts) - 1 and parts[n] == shared[n]:
            n += 1
        name = '.'.join(parts[:n + 1]) + ('.*' if len(parts) > n + 1 else '')
        groups[name] = groups.get(name, 0) + 1
    shown = [prefix + g + (f' ({c})' if g.endswith('*') else '')
             for g, c in list(groups.items())[:most]]
    if len(groups) > most:
        shown.append(f'{len(groups) - most} more')
    return ', '.join(shown)


def set_amp(cfg: Config, dtype: str) -> None:
    """Train in mixed precision, ``dtype`` 'auto' (bfloat16 where the GPU has it), 'bf16' or
    'fp16' (custom_modules/engine/optimizers/mixed_precision_wrapper.py)."""
    cfg.optim_wrapper.type = 'MixedPrecisionOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.optim_wrapper.dtype = dtype


def add_tensorboard(cfg: Config) -> None:
    """Log the scalars for TensorBoard too: mmengine's TensorboardVisBackend writes its event
    file beside scalars.json (work_dir/<timestamp>/vis_data/)."""
    backends = cfg.visualizer.setdefault('vis_backends', [])
    if not any(b['type'].split('.')[-1] == 'TensorboardVisBackend' for b in backends):
        backends.append(dict(type='TensorboardVisBackend'))


def drop_backbone_init(cfg: Config) -> None:
    if 'model' in cfg and cfg.model.get('backbone', {}).get('init_cfg'):
        cfg.model.backbone.init_cfg = None


def check_pretrained(cfg: Config) -> None:
    """Fail before building anything when the backbone checkpoint is unset or missing."""
    init_cfg = cfg.model.get('backbone', {}).get('init_cfg') if 'model' in cfg else None
    if not init_cfg or init_cfg.get('type') != 'Pretrained':
        return
    path = init_cfg.get('checkpoint') or ''
    if '://' not in path and not osp.isfile(path):
        raise UserError(
            f'backbone checkpoint {path!r} does not exist. Give the pretraining checkpoint (MoCo, '
            'MAE, ...) with '
            '`tools/train.py CONFIG --pretrained PATH` (or --cfg-options '
            'model.backbone.init_cfg.checkpoint=PATH).')


def dataset_classes(cfg: Config, name: str = 'test_dataloader') -> tuple:
    """The class names the ``name`` dataloader's dataset gives its labels (its metainfo; the
    dataset is built without reading its files)."""
    import copy

    import custom_modules  # noqa: F401  (the datasets' registration)
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope
    ds_cfg = copy.deepcopy(cfg[name]['dataset'])
    ds_cfg['lazy_init'] = True
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'mmdet'):
        return tuple(DATASETS.build(ds_cfg).metainfo['classes'])


def data_name(cfg: Config, name: str = 'test_dataloader') -> str:
    ds = cfg[name]['dataset']
    where = ds.get('ann_file') or ds.get('data_root')
    return f'{where} (split {ds["split"]})' if ds.get('split') and not ds.get('ann_file') else where
