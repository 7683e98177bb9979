"""Unlabeled pretraining from any image folder: every pretraining config finds .jpg .jpeg .png
.webp .bmp .tif .tiff files in any case and sub-folder, decodes each exactly as the labeled
pipeline does (Pillow, EXIF orientation not applied, 3-channel colour, 16-bit scaled to 8 bits),
decodes the course's RGB PNGs as before, skips and counts a truncated file, and trains."""
import glob
import os
import random

import mmcv
import numpy as np
import pytest
from mmcv.transforms import LoadImageFromFile
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image
from helpers import REPO, run_tool

REAL = ['mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py',
        'mocov2/mocov2_resnet50_4xb32-coslr-100e_unlabeled224.py',
        'densecl/densecl_resnet50_4xb32-coslr-200e_unlabeled224.py',
        'mae/mae_vit-base-p16_4xb64-amp-coslr-80e_unlabeled224.py']
DEMO = ['mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py',
        'densecl/densecl_resnet50_1xb16-coslr-8e_synthetic96.py',
        'mae/mae_vit-tiny-p16_1xb16-coslr-8e_synthetic96.py']
LABELED = os.path.join(REPO, 'configs/faster_rcnn/'
                       'faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py')
COURSE = 'COURSE.PNG'  # as the course's unlabeled images: 224x224 RGB, upper-case .PNG
GRADIENT16 = ('c/5.TIF', '7.pNg')  # 16-bit grayscale, each column c holding c * 257
EXIF_ROTATED = 'x/10.JpEg'  # stored 40 wide x 20 high, orientation 6 (display rotated 90)
TRUNCATED = 'x/y/11.PNG'


def _rgb(rng, w, h):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope='module')
def folder(module_tmp):
    """A nested folder of every extension in mixed case, mixed sizes and modes; returns (root,
    the images the datasets must find)."""
    root = module_tmp('any-images')
    rng = np.random.default_rng(0)
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint16) * 257, (4, 1)))
    assert gradient.mode == 'I;16'
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    writers = {
        COURSE: lambda p: _rgb(rng, 224, 224).save(p, format='PNG'),
        'a/0.JPG': lambda p: _rgb(rng, 40, 30).save(p, format='JPEG'),
        'a/b/1.jpeg': lambda p: _rgb(rng, 33, 47).convert('L').save(p, format='JPEG'),
        '2.Png': lambda p: Image.fromarray(rng.integers(0, 256, (20, 50, 4), dtype=np.uint8)
                                           ).save(p, format='PNG'),  # RGBA
        'b/3.WEBP': lambda p: _rgb(rng, 64, 48).save(p, format='WEBP'),
        '4.BMP': lambda p: _rgb(rng, 17, 9).save(p, format='BMP'),
        GRADIENT16[0]: lambda p: gradient.save(p, format='TIFF'),
        'c/d/6.tiff': lambda p: _rgb(rng, 30, 30).save(p, format='TIFF'),
        GRADIENT16[1]: lambda p: gradient.save(p, format='PNG'),
        'x/8.jpg': lambda p: _rgb(rng, 36, 28).convert('CMYK').save(p, format='JPEG'),
        '9.png': lambda p: _rgb(rng, 25, 25).convert('P', palette=Image.ADAPTIVE).save(
            p, format='PNG'),
        EXIF_ROTATED: lambda p: _rgb(rng, 40, 20).save(p, format='JPEG', exif=exif),
        TRUNCATED: lambda p: _rgb(rng, 64, 64).save(p, format='PNG'),
    }
    for rel, write in writers.items():
        os.makedirs(os.path.dirname(root / rel), exist_ok=True)
        write(root / rel)
    data = (root / TRUNCATED).read_bytes()
    (root / TRUNCATED).write_bytes(data[:len(data) // 2])
    assert {Image.open(root / rel).mode for rel in writers} >= {
        'RGB', 'L', 'RGBA', 'I;16', 'CMYK', 'P'}
    (root / 'notes.txt').write_text('not an image')
    Image.new('RGB', (8, 8)).save(root / 'a' / 'not-listed.gif')
    return str(root), sorted(str(root / rel) for rel in writers)


@pytest.fixture(scope='module')
def labeled_load():
    """The labeled pipeline's loading transform, as the detection configs build it."""
    from mmdet.registry import TRANSFORMS
    init_default_scope('mmdet')  # as the detection runner does, whatever a test before set
    return TRANSFORMS.build(Config.fromfile(LABELED).load_image)


def _dataset(config, folder, work_dir):
    """The config's training dataset, built as tools/train.py builds it with --data-root."""
    from mmpretrain.registry import DATASETS
    from train import build_cfg, parse_args
    cfg, _ = build_cfg(parse_args([os.path.join(REPO, 'configs', config), '--data-root', folder,
                                   '--work-dir', str(work_dir)]))
    init_default_scope(cfg.default_scope)
    return DATASETS.build(cfg.train_dataloader.dataset)


@pytest.mark.parametrize('config', REAL + DEMO)
def test_every_image_found_and_decoded_as_the_labeled_pipeline(config, folder, labeled_load,
                                                                tmp_path):
    from custom_modules.datasets.transforms.loading import LoadImageNamed
    root, images = folder
    ds = _dataset(config, root, tmp_path)
    paths = [ds.get_data_info(i)['img_path'] for i in range(len(ds))]
    assert sorted(paths) == images
    load = ds.pipeline.transforms[0]
    assert type(load) is LoadImageNamed  # a LoadImageFromFile: UnlabeledImageFolder guards it
    for path in images:
        if path.endswith(TRUNCATED):
            for loader in (load, labeled_load):
                with pytest.raises(OSError, match='cannot decode image'):
                    loader(dict(img_path=path))
            continue
        img = load(dict(img_path=path))['img']
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, path
        np.testing.assert_array_equal(img, labeled_load(dict(img_path=path))['img'], path)


def test_16_bit_scaled_exif_not_applied_course_pngs_as_before(folder):
    from mmpretrain.registry import TRANSFORMS
    root, _ = folder
    init_default_scope('mmpretrain')  # as the pretraining runner does
    load = TRANSFORMS.build(Config.fromfile(os.path.join(REPO, 'configs', REAL[0])).load_image)

    def decode(rel):
        return load(dict(img_path=os.path.join(root, rel)))['img']

    for rel in GRADIENT16:  # an 8-bit gradient, not 0 then 255 everywhere (clipped)
        img = decode(rel)
        assert img.shape == (4, 256, 3)
        np.testing.assert_array_equal(img, np.broadcast_to(np.arange(256)[None, :, None],
                                                           img.shape), rel)
    # as stored, 40 wide: the tag is there (Pillow applying it would give 20 wide)
    assert decode(EXIF_ROTATED).shape == (20, 40, 3)
    assert mmcv.imread(os.path.join(root, EXIF_ROTATED), backend='pillow').shape == (40, 20, 3)
    # the loader the pretraining configs had (cv2, BGR) gives the same array for a course PNG
    before = LoadImageFromFile()(dict(img_path=os.path.join(root, COURSE)))['img']
    np.testing.assert_array_equal(decode(COURSE), before)


@pytest.mark.parametrize('config', [REAL[0], REAL[3]])
def test_course_png_gives_the_same_training_views_as_before(config, folder):
    """A course PNG through the whole augmentation, the config's loader against the one the
    pretraining configs had: the same random draws give the same tensors."""
    import torch
    from mmengine.dataset import Compose
    cfg = Config.fromfile(os.path.join(REPO, 'configs', config))
    init_default_scope(cfg.default_scope)
    now = cfg.train_dataloader.dataset.pipeline
    pipelines = [Compose(now), Compose([dict(type='LoadImageFromFile'), *now[1:]])]
    path = os.path.join(folder[0], COURSE)
    for seed in range(4):  # several draws: grayscale, blur, flip or not
        outs = []
        for pipeline in pipelines:
            random.seed(seed)  # mmcv's RandomGrayscale draws from Python's random
            np.random.seed(seed)
            inputs = pipeline(dict(img_path=path))['inputs']
            outs.append(inputs if isinstance(inputs, list) else [inputs])
        assert all(torch.equal(a, b) for a, b in zip(*outs)), seed


@pytest.mark.parametrize('config', REAL)
def test_truncated_file_skipped_and_counted_every_sample_trainable(config, folder, tmp_path):
    from custom_modules.datasets.samplers import SampleIndex
    root, images = folder
    ds = _dataset(config, root, tmp_path)
    paths = [ds.get_data_info(i)['img_path'] for i in range(len(ds))]
    for i in range(len(ds)):  # every size and mode through the config's augmentation
        inputs = ds[SampleIndex(i, i)]['inputs']
        for view in (inputs if isinstance(inputs, list) else [inputs]):
            assert tuple(view.shape) == (3, 224, 224)
    bad = os.path.join(root, TRUNCATED)
    assert ds.unreadable.num_files == 1 and ds.unreadable_files() == [bad]
    ds[SampleIndex(paths.index(bad), 7)]  # once more: still one file
    assert ds.unreadable.num_files == 1 and ds.unreadable.num_skipped >= 2


@pytest.mark.slow
def test_moco_demo_trains_on_the_folder(folder, tmp_path):
    root, images = folder
    work = tmp_path / 'work'
    r = run_tool('train.py', os.path.join(REPO, 'configs', DEMO[0]), '--data-root', root,
                 '--work-dir', work, '--cfg-options', 'train_cfg.max_epochs=1',
                 'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0',
                 'train_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert os.path.exists(work / 'epoch_1.pth')
    [log] = glob.glob(str(work / '*' / '*.log'))
    text = open(log).read()
    iters = len(images) // 4  # drop_last
    assert f'Epoch(train) [1][{iters}/{iters}]' in text and 'loss: ' in text, text[-3000:]
    assert f'unreadable image {os.path.join(root, TRUNCATED)}' in text, text[-3000:]
