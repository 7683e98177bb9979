"""Project code registered into the OpenMMLab registries.

Configs load it with
``custom_imports = dict(imports=['custom_modules'], allow_failed_imports=False)``.
"""
from .datasets import *  # noqa: F401,F403
from .transforms import LoadImageNamed  # noqa: F401
