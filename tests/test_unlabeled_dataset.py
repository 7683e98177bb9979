"""The MoCo configs' dataset finds N.PNG files (upper-case, sub-folders) and nothing else."""
import os

from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from mmpretrain.registry import DATASETS

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'mocov2',
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
