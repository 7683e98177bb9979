"""The import path of the MoCo transforms before the package was grouped: configs written then
name it in ``custom_imports``."""
from .datasets.transforms.moco import CV2GaussianBlur, CV2RandomGrayscale  # noqa: F401
