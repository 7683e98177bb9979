"""The MoCo configs' dataset finds N.PNG files (upper-case, sub-folders) and nothing else;
UnlabeledImageFolder, the same scan, skips, counts and limits unreadable ones."""
import os
import types

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from PIL import Image

from helpers import REPO
from mmpretrain.registry import DATASETS

CONFIG = os.path.join(REPO, 'configs', 'mocov2',
                      'mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py')


def test_png_folder_with_subfolders(tmp_path):
    (tmp_path / 'part1').mkdir()
    for rel in ('0.PNG', '1.PNG', 'part1/2.PNG'):
        Image.new('RGB', (224, 224), (9, 9, 9)).save(tmp_path / rel, format='PNG')
    (tmp_path / 'notes.txt').write_text('not an image')
    cfg = Config.fromfile(CONFIG)
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = str(tmp_path)
    init_default_scope('mmpretrain')
    ds = DATASETS.build(ds_cfg)
    paths = sorted(ds.get_data_info(i)['img_path'] for i in range(len(ds)))
    assert paths == sorted(str(tmp_path / rel) for rel in ('0.PNG', '1.PNG', 'part1/2.PNG'))
    views = ds[0]['inputs']
    assert len(views) == 2 and tuple(views[0].shape) == (3, 224, 224)


# --- UnlabeledImageFolder: unreadable images are skipped, counted and limited ---

def _png_folder(root, n=10, bad=('part1/8.PNG',)):
    """``n`` small N.PNG files, some in a sub-folder; those named in ``bad`` are cut in half,
    which OpenCV refuses to decode (``failed to load image``)."""
    (root / 'part1').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f'{i}.PNG' if i % 2 else f'part1/{i}.PNG' for i in range(n)]
    assert set(bad) <= set(names)
    for rel in names:
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
            root / rel, format='PNG')
    for rel in bad:
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(data[:len(data) // 2])
    return [str(root / rel) for rel in bad]


def _folder_dataset(root, **kwargs):
    """The MoCo config's dataset and pipeline, as UnlabeledImageFolder."""
    import custom_modules.datasets.unlabeled  # noqa: F401  (registers the dataset, as the config)
    cfg = Config.fromfile(CONFIG)
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.update(type='UnlabeledImageFolder', data_root=str(root), **kwargs)
    init_default_scope('mmpretrain')
    return DATASETS.build(ds_cfg)


def test_unreadable_image_skipped_logged_and_counted_once(tmp_path, log_file):
    from custom_modules.datasets.samplers import SampleIndex
    [bad] = _png_folder(tmp_path / 'data')
    ds = _folder_dataset(tmp_path / 'data')
    paths = [ds.get_data_info(i)['img_path'] for i in range(len(ds))]
    assert len(ds) == 10 and bad in paths  # CustomDataset's scan: sub-folders, .PNG kept
    for epoch in range(2):  # two epochs: the same bad file must not count twice
        for i in range(len(ds)):
            # seeded as by ResumableBatchSampler, so the random substitutes are fixed
            views = ds[SampleIndex(i, 1000 * epoch + i)]['inputs']
            assert len(views) == 2 and tuple(views[0].shape) == (3, 224, 224)
    # a substitute may be the bad file again: more failed loads, still one file
    assert ds.unreadable.num_files == 1 and ds.unreadable.num_skipped >= 2
    assert ds.unreadable_files() == [bad]
    log = log_file.read_text()
    assert log.count(f'unreadable image {bad}') == 1, log
    # the substitute for a bad sample is reproducible from the sample's seed
    bad_idx = paths.index(bad)
    a, b = (ds[SampleIndex(bad_idx, 1234)]['inputs'] for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_unreadable_count_reaches_main_process_from_workers(tmp_path, log_file):
    from custom_modules.engine.hooks.unreadable_image_hook import UnreadableImageHook
    [bad] = _png_folder(tmp_path / 'data')
    ds = _folder_dataset(tmp_path / 'data')
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2,
                                         collate_fn=lambda batch: len(batch))
    assert ds.unreadable.num_files == 0
    assert sum(loader) == len(ds)  # one epoch, every sample loaded in a worker process
    assert ds.unreadable.num_files == 1
    # the hook's per-epoch summary, in the main process
    runner = types.SimpleNamespace(train_dataloader=loader,
                                   logger=MMLogger.get_current_instance())
    UnreadableImageHook().after_train_epoch(runner)
    log = log_file.read_text()
    assert f'1 unreadable images skipped so far, e.g. {bad}' in log, log
    assert 'tools/check_dataset.py' in log


def test_too_many_unreadable_images_stop_with_their_names(tmp_path):
    from custom_modules.datasets.unreadable import UnreadableImagesError
    from custom_modules.datasets.samplers import SampleIndex
    bad = _png_folder(tmp_path / 'data', bad=('3.PNG', 'part1/8.PNG'))
    ds = _folder_dataset(tmp_path / 'data', max_unreadable=0)
    idx = [ds.get_data_info(i)['img_path'] for i in range(len(ds))].index(bad[1])
    with pytest.raises(UnreadableImagesError, match=r'1 unreadable images.*8\.PNG') as e:
        ds[idx]
    assert f'tools/check_dataset.py {ds.img_prefix}' in str(e.value)
    # one over the limit: the second distinct bad file stops it, not the first
    ds = _folder_dataset(tmp_path / 'data', max_unreadable=1)
    paths = [ds.get_data_info(i)['img_path'] for i in range(len(ds))]
    # seeded, so that the substitute for bad[0] is a fixed readable image
    ds[SampleIndex(paths.index(bad[0]), 0)]
    assert ds.unreadable.num_files == 1
    with pytest.raises(UnreadableImagesError, match=r'^2 unreadable images'):
        ds[SampleIndex(paths.index(bad[1]), 0)]
