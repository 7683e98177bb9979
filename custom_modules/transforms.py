"""Image loading that names the file when decoding fails."""
from mmcv.transforms import LoadImageFromFile
from mmdet.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadImageNamed(LoadImageFromFile):
    """mmdet's ``LoadImageFromFile``, but a failure says which file and why.

    Use with ``imdecode_backend='pillow'``: Pillow raises on a truncated JPEG, whereas OpenCV
    silently returns a partly grey image. Grayscale, CMYK and RGBA files are converted to
    3-channel colour by the decoder. The configs load with
    ``color_type='color_ignore_orientation'``: colour, with the EXIF orientation not applied, as
    the seed's loader did (the yml boxes are in the stored pixel order).
    """

    def transform(self, results: dict):
        try:
            out = super().transform(results)
        except Exception as e:
            raise OSError(f"{results['img_path']}: cannot decode image ({e})") from e
        if out is None or out.get('img') is None:
            raise OSError(f"{results['img_path']}: cannot decode image (decoder returned nothing)")
        return out
