"""The two steps of torchvision's Faster R-CNN inference that mmdet's own modules do differently,
for evaluating the seed's converted checkpoint (configs/faster_rcnn/*_tv-e2e_*)."""
import numpy as np
import torch
import torch.nn.functional as F
from mmdet.datasets.transforms import Resize
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmdet.registry import TASK_UTILS, TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes


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


@TASK_UTILS.register_module()
class TorchvisionAnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` in mmdet's interface: base anchors rounded to whole
    pixels, and each level's stride = padded input size // feature map size, per axis. The last
    level (P6, a stride-2 max-pool of P5) then gets a stride below 64 whenever P5's side is odd,
    e.g. 61 for an 800-pixel side; mmdet always uses 64.
    """

    def gen_single_level_base_anchors(self, base_size, scales, ratios, center=None):
        return super().gen_single_level_base_anchors(base_size, scales, ratios, center).round()

    def grid_priors(self, featmap_sizes, dtype=torch.float32, device='cuda'):
        # the finest level's stride is exact (the input is padded to a multiple of 32)
        in_h = featmap_sizes[0][0] * self.strides[0][1]
        in_w = featmap_sizes[0][1] * self.strides[0][0]
        anchors = []
        for base, (feat_h, feat_w) in zip(self.base_anchors, featmap_sizes):
            shift_x = torch.arange(feat_w, device=device).to(dtype) * (in_w // feat_w)
            shift_y = torch.arange(feat_h, device=device).to(dtype) * (in_h // feat_h)
            xx, yy = self._meshgrid(shift_x, shift_y)
            shifts = torch.stack([xx, yy, xx, yy], dim=-1)
            level = (base.to(device=device, dtype=dtype)[None] + shifts[:, None]).view(-1, 4)
            anchors.append(HorizontalBoxes(level) if self.use_box_type else level)
        return anchors
