"""torchvision's resize in mmdet, for evaluating the seed's converted checkpoint
(configs/faster_rcnn/*_tv-e2e_*); the anchors it pairs with are
custom_modules/models/anchor_generator.py."""
import numpy as np
import torch
import torch.nn.functional as F
from mmdet.datasets.transforms import Resize
from mmdet.registry import TRANSFORMS


@TRANSFORMS.register_module()
class TorchvisionResize(Resize):
    """Resize as torchvision's ``GeneralizedRCNNTransform``: factor
    ``min(short / min(h, w), long / max(h, w))``, output size ``floor(side * factor)``, bilinear
    (``align_corners=False``) on the float image, which stays float (no rounding to uint8).

    mmdet's ``Resize`` rounds the size to the nearest pixel and interpolates the uint8 image
    with cv2 or Pillow. torchvision resizes the normalized image; interpolation is linear, so
    resizing before the data preprocessor normalizes gives the same values up to float rounding.
    """

    def __init__(self, scale, **kwargs):
        super().__init__(scale=scale, keep_ratio=True, **kwargs)

    def _resize_img(self, results: dict) -> None:
        img = results.get('img')
        if img is None:
            return
        h, w = img.shape[:2]
        long_side, short_side = max(results['scale']), min(results['scale'])
        factor = min(short_side / min(h, w), long_side / max(h, w))
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
        x = F.interpolate(x, scale_factor=factor, mode='bilinear', recompute_scale_factor=True,
                          align_corners=False)[0]
        new_h, new_w = x.shape[-2:]
        results['img'] = x.permute(1, 2, 0).numpy()
        results['img_shape'] = (new_h, new_w)
        results['scale_factor'] = (new_w / w, new_h / h)
        results['keep_ratio'] = True
