"""Image loading that names the file when decoding fails and keeps 16-bit images' contrast."""
from __future__ import annotations

import io

import mmcv
import numpy as np
from mmcv.image.io import _pillow2array
from mmcv.transforms import LoadImageFromFile
from mmdet.registry import TRANSFORMS as DET_TRANSFORMS
from mmengine import fileio
from mmpretrain.registry import TRANSFORMS as PRETRAIN_TRANSFORMS
from PIL import Image, ImageOps

from ...fileio.squashfs import ImageChangedError

# a data info's ``apply_exif_orientation`` (set by the COCO dataset per image) overrides the
# configured color_type's orientation rule: (flag that applies it, flag that ignores it)
_ORIENTATION_FLAGS = {
    'color': ('color', 'color_ignore_orientation'),
    'color_ignore_orientation': ('color', 'color_ignore_orientation'),
    'grayscale': ('grayscale', 'grayscale_ignore_orientation'),
    'grayscale_ignore_orientation': ('grayscale', 'grayscale_ignore_orientation'),
}


def orientation_flag(flag: str, apply: bool | None) -> str:
    """mmcv's decoding ``flag`` with the EXIF orientation applied (``apply`` True) or ignored
    (False); ``flag`` as it is for None or a flag without an orientation rule."""
    if apply is None or flag not in _ORIENTATION_FLAGS:
        return flag
    return _ORIENTATION_FLAGS[flag][0 if apply else 1]


def pillow_to_8bit(img: Image.Image, flag: str) -> Image.Image:
    """A 16-bit grayscale image (PNG, TIFF: Pillow mode ``I;16*``) as 8-bit ``L`` holding the
    high byte of each pixel, which is what Pillow keeps of 16-bit RGB and RGBA files; Pillow's
    own conversion to RGB clips such an image at 255 (nearly all white). Other images are
    returned as they are."""
    if not img.mode.startswith('I;16'):
        return img
    if flag in ('color', 'grayscale'):  # the new image has no EXIF: orient it here, as mmcv would
        img = ImageOps.exif_transpose(img)
    return Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))  # mode L


# Registered in the two scopes that load images with it: the detection datasets (mmdet) and the
# unlabeled pretraining datasets (mmpretrain), which thereby decode every file alike.
@DET_TRANSFORMS.register_module()
@PRETRAIN_TRANSFORMS.register_module()
class LoadImageNamed(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile``, but a failure says which file and why, and a 16-bit image
    is scaled to 8 bits (:func:`pillow_to_8bit`) instead of clipped.

    Use with ``imdecode_backend='pillow'``: Pillow raises on a truncated JPEG, whereas OpenCV
    silently returns a partly grey image. Grayscale, palette, CMYK and RGBA files are converted
    to 3-channel colour by mmcv's Pillow decoding. The configs load with
    ``color_type='color_ignore_orientation'``: colour, with the EXIF orientation not applied, as
    the seed's loader did (the yml boxes are in the stored pixel order). A data info with
    ``apply_exif_orientation`` (COCO data: ``coco_det.coco_frame`` decides per image) applies
    or ignores the orientation as it says. A subclass of ``LoadImageFromFile``, so
    ``UnlabeledImageFolder`` treats its failures as unreadable files.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.file_client_args is not None:  # deprecated in mmcv; transform reads backend_args
            raise ValueError('LoadImageNamed takes backend_args, not file_client_args')

    def transform(self, results: dict):
        path = results['img_path']
        flag = orientation_flag(self.color_type, results.get('apply_exif_orientation'))
        try:
            img = self._decode(fileio.get(path, backend_args=self.backend_args), flag)
        except ImageChangedError:  # not this file's fault: the run stops with that error
            raise
        except Exception as e:
            raise OSError(f'{path}: cannot decode image ({e})') from e
        if img is None:
            raise OSError(f'{path}: cannot decode image (decoder returned nothing)')
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def _decode(self, content: bytes, flag: str):
        if self.imdecode_backend != 'pillow':
            return mmcv.imfrombytes(content, flag=flag, backend=self.imdecode_backend)
        # mmcv.imfrombytes' Pillow branch, with the 16-bit scaling before its colour conversion
        with io.BytesIO(content) as buff:
            img = Image.open(buff)
            return _pillow2array(pillow_to_8bit(img, flag), flag)
