"""tools/train.py --pretrained FILE: every kind of backbone checkpoint we meet (our mmpretrain
MoCo and DenseCL runs, facebookresearch/moco, a torchvision ResNet-50 as mocov2_to_torchvision.py
writes it, a backbone.* file, detectors with --backbone-from-detector) initializes the detector's
ResNet-50 with exactly its tensors; unknown files, detectors without the flag and other depths
are refused with a message saying what the file is."""
import os

import mmpretrain
import pytest
import torch
import torchvision
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from model_converters import mocov2_to_torchvision as moco2tv

import custom_modules  # noqa: F401
from toolkit.checkpoints import (KIND_NAMES, backbone_prefix, check_detector_checkpoint,
                                 checkpoint_kind, load_state_dict_file)
from toolkit.config_edits import set_pretrained
from helpers import REPO


MOCO_DEMO = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py')
DENSECL = os.path.join(os.path.dirname(mmpretrain.__file__),  # mmpretrain's own recipe
                       '.mim/configs/densecl/densecl_resnet50_8xb32-coslr-200e_in1k.py')
DET_FULL = os.path.join(REPO, 'configs/faster_rcnn/'
                        'faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py')
NBT = 'num_batches_tracked'

# file -> (kind, init_cfg prefix, words the description must contain)
CASES = {
    'mmpretrain-moco': ('mmpretrain-moco', 'backbone.',
                        ['backbone from backbone.*', 'neck.*', 'encoder_k.*', 'queue']),
    'mmpretrain-densecl': ('mmpretrain-densecl', 'backbone.',
                           ['backbone from backbone.*', 'neck.*', 'encoder_k.*', 'queue2']),
    'fb-moco': ('fb-moco', 'module.encoder_q.',
                ['backbone from module.encoder_q.*', 'module.encoder_q.fc.*',
                 'module.encoder_k.*', 'module.queue']),
    'fb-moco-no-ddp': ('fb-moco', 'encoder_q.', ['backbone from encoder_q.*']),
    'torchvision-resnet': ('torchvision-resnet', None,
                           ['backbone from the whole state_dict', 'not used: fc.* (2)']),
    'mocov2_to_torchvision': ('torchvision-resnet', None, ['backbone from the whole state_dict']),
    'torchvision-resnet-ddp': ('torchvision-resnet', 'module.', ['backbone from module.*']),
    'backbone': ('backbone', 'backbone.', ['backbone from backbone.*', 'head.*']),
    'mmdet': ('mmdet', 'backbone.', ['neck.*', 'rpn_head.*', 'roi_head.*']),
    'torchvision-detector': ('torchvision-detector', 'module.backbone.body.',
                             ['module.backbone.fpn.*', 'module.rpn.*', 'module.roi_heads.*',
                              f'{NBT} counters absent']),
}
DETECTORS = ('mmdet', 'torchvision-detector')


def build(cfg):
    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


def det_config():
    return Config.fromfile(DET_FULL)


@pytest.fixture(scope='module')
def files(module_tmp):
    """The source ResNet-50 backbone (every tensor, BatchNorm statistics included, perturbed)
    and one file per case holding it."""
    torch.manual_seed(0)
    cfg = det_config()
    cfg.model.backbone.init_cfg = None
    det = build(cfg)
    with torch.no_grad():
        for k, t in det.backbone.state_dict().items():
            if k.endswith(NBT):
                t.fill_(7)
            elif k.endswith('running_var'):
                t.uniform_(0.5, 1.5)
            else:
                t.normal_()
    src = {k: v.clone() for k, v in det.backbone.state_dict().items()}
    folder = module_tmp('pretrained')
    paths = {}

    def save(case, name, obj):
        paths[case] = str(folder / name)
        torch.save(obj, paths[case])

    # our pretraining runs: the real models, query encoder = the source
    for case, config, name in (('mmpretrain-moco', MOCO_DEMO, 'epoch_8.pth'),
                               ('mmpretrain-densecl', DENSECL, 'densecl_epoch_8.pth')):
        ssl_cfg = Config.fromfile(config)
        ssl_cfg.model.queue_len = 1024
        ssl = build(ssl_cfg)
        ssl.backbone.load_state_dict(src)
        save(case, name, dict(meta=dict(epoch=8), state_dict=ssl.state_dict()))
        del ssl
    moco2tv.main([paths['mmpretrain-moco'], str(folder / 'resnet50_mocov2.pth')])
    paths['mocov2_to_torchvision'] = str(folder / 'resnet50_mocov2.pth')

    resnet = torchvision.models.resnet50(weights=None)
    missing, unexpected = resnet.load_state_dict(src, strict=False)
    assert sorted(missing) == ['fc.bias', 'fc.weight'] and not unexpected
    tv = resnet.state_dict()
    save('torchvision-resnet', 'resnet50.pth', tv)
    save('torchvision-resnet-ddp', 'resnet50_ddp.pth', {f'module.{k}': v for k, v in tv.items()})

    # facebookresearch/moco's checkpoint_0100.pth.tar: MLP head under encoder_q.fc, key encoder
    q = {f'encoder_q.{k}': v for k, v in tv.items() if not k.startswith('fc.')}
    q.update({'encoder_q.fc.0.weight': torch.zeros(2048, 2048), 'encoder_q.fc.0.bias':
              torch.zeros(2048), 'encoder_q.fc.2.weight': torch.zeros(128, 2048),
              'encoder_q.fc.2.bias': torch.zeros(128)})
    q.update({k.replace('encoder_q.', 'encoder_k.'): torch.zeros_like(v) for k, v in q.items()})
    q.update(queue=torch.zeros(128, 1024), queue_ptr=torch.zeros(1, dtype=torch.long))
    ddp = {f'module.{k}': v for k, v in q.items()}
    save('fb-moco', 'checkpoint_0100.pth.tar',
         dict(epoch=100, arch='resnet50', optimizer={}, state_dict=ddp))
    save('fb-moco-no-ddp', 'moco_single_gpu.pth.tar', dict(state_dict=q))

    save('backbone', 'resnet50_cls.pth',  # e.g. an mmpretrain ImageNet classifier
         dict(state_dict={**{f'backbone.{k}': v for k, v in src.items()},
                          'head.fc.weight': torch.zeros(1000, 2048)}))
    save('mmdet', 'epoch_37.pth', dict(meta=dict(epoch=37), state_dict=det.state_dict()))
    # the seed's e2e file: DDP, FrozenBatchNorm2d (no num_batches_tracked), FPN under backbone.
    e2e = {f'module.backbone.body.{k}': v for k, v in src.items() if not k.endswith(NBT)}
    e2e.update({'module.backbone.fpn.inner_blocks.0.0.weight': torch.zeros(256, 256, 1, 1),
                'module.rpn.head.conv.0.0.weight': torch.zeros(256, 256, 3, 3),
                'module.roi_heads.box_predictor.cls_score.weight': torch.zeros(101, 1024)})
    save('torchvision-detector', 'best_e2e_checkpoint.pth.tar', dict(epoch=37, state_dict=e2e))

    save('resnet18', 'resnet18.pth', torchvision.models.resnet18(weights=None).state_dict())
    save('no-layer4', 'no_layer4.pth', dict(state_dict={f'backbone.{k}': v for k, v in src.items()
                                                        if not k.startswith('layer4.')}))
    save('unknown', 'unknown.pth', dict(state_dict={'encoder.0.weight': torch.zeros(3)}))
    paths['not-torch'] = str(folder / 'notes.txt')
    with open(paths['not-torch'], 'w') as f:
        f.write('not a checkpoint\n')
    return src, paths


@pytest.mark.parametrize('case', list(CASES))
def test_kind_prefix_and_description(files, case):
    src, paths = files
    kind, prefix, words = CASES[case]
    state = load_state_dict_file(paths[case])
    assert checkpoint_kind(state) == kind
    assert backbone_prefix(kind, state) == prefix
    cfg = det_config()
    line = set_pretrained(cfg, paths[case], backbone_from_detector=kind in DETECTORS)
    assert cfg.model.backbone.init_cfg.checkpoint == paths[case] == cfg.pretrained
    assert cfg.model.backbone.init_cfg.prefix == prefix
    n = len([k for k in src if case != 'torchvision-detector' or not k.endswith(NBT)])
    assert line.startswith(f'--pretrained {paths[case]}: {KIND_NAMES[kind]}, backbone from ')
    assert f'({n} tensors' in line and '\n' not in line, line
    for w in words:
        assert w in line, (w, line)
    if case == 'mocov2_to_torchvision':
        assert 'not used' not in line, line


@pytest.mark.parametrize('case', ['mmpretrain-moco', 'mmpretrain-densecl', 'fb-moco',
                                  'torchvision-resnet', 'torchvision-resnet-ddp', 'backbone',
                                  'mmdet', 'torchvision-detector'])
def test_detector_backbone_equals_the_source(files, case):
    """The whole detector built and initialized as tools/train.py does it."""
    src, paths = files
    cfg = det_config()
    set_pretrained(cfg, paths[case], backbone_from_detector=case in DETECTORS)
    det = build(cfg)
    det.init_weights()
    ours = det.backbone.state_dict()
    assert set(ours) == set(src)
    for k, v in src.items():
        if case == 'torchvision-detector' and k.endswith(NBT):
            assert ours[k] == 0, k  # FrozenBatchNorm2d has none: left as built
        else:
            assert torch.equal(ours[k], v), k


@pytest.mark.parametrize('case', DETECTORS)
def test_detector_refused_without_the_flag(files, case):
    cfg = det_config()
    before = cfg.model.backbone.init_cfg.checkpoint
    with pytest.raises(ValueError, match=f'{KIND_NAMES[case]}.*--backbone-from-detector'):
        set_pretrained(cfg, files[1][case])
    assert cfg.model.backbone.init_cfg.checkpoint == before


@pytest.mark.parametrize('case,words', [
    ('unknown', r'not a backbone checkpoint of a known layout '
                r"\(first keys: \['encoder.0.weight'\]"),
    ('not-torch', 'not a PyTorch checkpoint file'),
    ('resnet18', r'torchvision ResNet state_dict, but the whole state_dict does not fit the '
                 r"config's ResNet-50 backbone: \d+ of its \d+ tensors missing .*another shape"),
    ('no-layer4', r'backbone.\* checkpoint, but backbone.\* does not fit .* tensors missing '
                  r'\(layer4.\* \(\d+\)\)'),
])
def test_wrong_files_refused(files, case, words):
    cfg = det_config()
    before = cfg.model.backbone.init_cfg.checkpoint
    with pytest.raises(ValueError, match=words):
        set_pretrained(cfg, files[1][case], backbone_from_detector=True)
    assert cfg.model.backbone.init_cfg.checkpoint == before


def test_backbone_files_refused_for_evaluation(files):
    for case in ('mmpretrain-densecl', 'torchvision-resnet'):
        with pytest.raises(ValueError, match='backbone-only checkpoint'):
            check_detector_checkpoint(files[1][case])
