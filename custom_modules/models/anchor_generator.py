"""torchvision's anchors in mmdet, for evaluating the seed's converted checkpoint
(configs/faster_rcnn/*_tv-e2e_*); the resize it pairs with is
custom_modules/datasets/transforms/torchvision_resize.py."""
import torch
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import HorizontalBoxes


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
