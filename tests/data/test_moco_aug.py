"""MoCo v2 augmentation: the real config's pipeline keeps the seed's (aug_plus) parameters, and
the cv2 transforms do what the Pillow/NumPy ones they replace do."""
import os

import cv2
import numpy as np
import pytest
from mmcv.transforms import RandomGrayscale
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from PIL import Image, ImageFilter

from custom_modules.datasets.transforms.moco import CV2GaussianBlur, CV2RandomGrayscale
from helpers import REPO


MOCO = os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py')


def photo(size=64, seed=0):
    """Smooth colour regions plus noise, BGR uint8."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize(
        (size, size), Image.BICUBIC)
    noisy = np.asarray(field, np.float32) + rng.normal(0, 20, (size, size, 3))
    return noisy.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def pipeline():
    cfg = Config.fromfile(MOCO)
    init_default_scope(cfg.default_scope)
    return Compose(cfg.train_dataloader.dataset.pipeline)


def test_two_different_uint8_views_of_224(pipeline, tmp_path):
    path = str(tmp_path / '0.PNG')
    Image.fromarray(photo(224)).save(path)
    np.random.seed(0)
    views = pipeline(dict(img_path=path))['inputs']
    assert len(views) == 2
    for v in views:
        assert tuple(v.shape) == (3, 224, 224) and str(v.dtype) == 'torch.uint8'
    assert (views[0].float() - views[1].float()).abs().mean() > 5


def test_view_parameters_are_the_seeds(pipeline):
    """facebookresearch/moco --aug-plus: RandomResizedCrop(224, scale=(0.2, 1.)),
    ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, RandomGrayscale p=0.2, GaussianBlur sigma 0.1-2 p=0.5,
    horizontal flip p=0.5."""
    multiview = pipeline.transforms[1]
    crop, jitter, gray, blur, flip = multiview.pipelines[0].transforms
    assert crop.scale == (224, 224) and crop.crop_ratio_range == (0.2, 1.)
    assert np.allclose(crop.aspect_ratio_range, (3 / 4, 4 / 3))
    assert jitter.prob == 0.8
    cj = jitter.transforms.transforms[0]
    assert (cj.brightness, cj.contrast, cj.saturation, cj.hue) == (
        (0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
    assert type(gray).__name__ == 'CV2RandomGrayscale' and gray.prob == 0.2
    assert type(blur).__name__ == 'CV2GaussianBlur' and blur.prob == 0.5
    np.random.seed(0)
    sigmas = [blur.random_magnitude() for _ in range(2000)]
    assert 0.1 <= min(sigmas) < 0.15 and 1.95 < max(sigmas) <= 2.0
    assert flip.prob == 0.5 and flip.direction == 'horizontal'


@pytest.mark.parametrize('sigma', [0.5, 1.0, 2.0])
def test_blur_matches_pillows_gaussian_blur(sigma):
    img = photo()
    out = CV2GaussianBlur(radius=sigma, prob=1.)(dict(img=img.copy()))['img']
    ref = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)), np.float32)
    change = np.abs(ref - img).mean()
    assert change > 5 and np.abs(out - ref).mean() < 0.1 * change


def test_blur_and_grayscale_probabilities():
    img = photo(16)
    blur = CV2GaussianBlur(magnitude_range=(0.1, 2.0), magnitude_std='inf', prob=0.5)
    gray = CV2RandomGrayscale(prob=0.2)
    np.random.seed(0)
    def changed(t):
        return np.mean([not np.array_equal(t(dict(img=img.copy()))['img'], img) for _ in range(2000)])
    blurred, grayed = changed(blur), changed(gray)
    assert abs(blurred - 0.5) < 0.05 and abs(grayed - 0.2) < 0.04


def test_grayscale_matches_mmcv_luma():
    img = photo()
    out = CV2RandomGrayscale(prob=1.)(dict(img=img.copy()))['img']
    ref = RandomGrayscale(prob=1., keep_channels=True, channel_weights=(0.114, 0.587, 0.2989))(
        dict(img=img.copy()))['img']
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 2]) and np.array_equal(out[..., 0], out[..., 1])
    assert np.abs(out.astype(int) - ref).max() <= 1
    assert np.array_equal(out[..., 0], cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
