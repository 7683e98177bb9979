"""cv2 versions of two MoCo v2 augmentations, registered for mmpretrain.

Same random draws and parameters as the transforms they replace, computed with cv2 on the
uint8 BGR image: mmpretrain's versions took 40 % of the pipeline's time once the crop and
colour jitter used cv2 (tools/benchmarks/bench_moco_aug.py --profile). Loaded by the MoCo
configs only (``custom_imports``), so the detection configs do not import mmpretrain.
"""
import cv2
from mmcv.transforms import RandomGrayscale
from mmpretrain.datasets.transforms import GaussianBlur
from mmpretrain.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CV2GaussianBlur(GaussianBlur):
    """mmpretrain's ``GaussianBlur`` (sigma drawn from ``magnitude_range``, applied with
    ``prob``) as an exact Gaussian of that standard deviation, where Pillow's filter
    approximates it with three box blurs: 5-10x faster at 224 px."""

    def transform(self, results: dict) -> dict:
        if self.random_disable():
            return results
        sigma = self.radius if self.radius is not None else self.random_magnitude()
        results['img'] = cv2.GaussianBlur(results['img'], (0, 0), sigma)
        return results


@TRANSFORMS.register_module()
class CV2RandomGrayscale(RandomGrayscale):
    """mmcv's ``RandomGrayscale`` for 3-channel BGR images, channels kept, with cv2's BT.601
    luma (0.299 R + 0.587 G + 0.114 B, the weights the base config gives) instead of a float64
    NumPy sum: 50x faster."""

    def __init__(self, prob: float = 0.1) -> None:
        super().__init__(prob=prob, keep_channels=True)

    def transform(self, results: dict) -> dict:
        if self._random_prob() < self.prob:
            gray = cv2.cvtColor(results['img'], cv2.COLOR_BGR2GRAY)
            results['img'] = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        return results
