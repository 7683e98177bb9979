"""Project code registered into the OpenMMLab registries, grouped as mmdet groups its package.

Configs load it with
``custom_imports = dict(imports=['custom_modules'], allow_failed_imports=False)``; the pretraining
configs add ``custom_modules.datasets.unlabeled`` and ``custom_modules.datasets.transforms.moco``
(mmpretrain types). Importing it registers classes, two file backends (``atomic_local``, and
``sqsh`` for data read out of a squashfs image) and the ``best-of://`` checkpoint scheme, and
changes nothing else. What only the tools share is tools/toolkit (docs/architecture.md).
"""
from . import datasets, engine, evaluation, fileio, models  # noqa: F401
