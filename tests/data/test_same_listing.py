"""A data tree lists the same files in the same order whether it is a folder or packed into a
squashfs image (and unpacked again): hidden names (``._a.PNG`` from macOS, ``.DS_Store``, hidden
folders) are skipped and counted in both; a symlink is followed in a folder, and stops a run
with one line naming it inside an image, which holds only the link's text."""
import os
import subprocess

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from helpers import REPO
from squashfs_tools import mksquashfs, mksquashfs_unavailable

_why = mksquashfs_unavailable()
pytestmark = pytest.mark.skipif(_why is not None, reason=f'squashfs tests skipped: {_why}')
CONFIG = os.path.join(REPO, 'configs', 'mocov2',
                      'mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py')
IMAGES = ['0.PNG', '1.PNG', 'sub/2.PNG']


def _tree(root, link: bool):
    (root / 'sub').mkdir(parents=True)
    (root / '.thumbs').mkdir()
    for i, rel in enumerate(IMAGES + ['.thumbs/3.PNG']):
        Image.new('RGB', (24, 24), (i, 9, 9)).save(root / rel)
    (root / '._0.PNG').write_bytes(b'\x00\x05\x16\x07 AppleDouble resource fork')
    (root / 'sub' / '._2.PNG').write_bytes(b'\x00\x05\x16\x07')
    (root / '.DS_Store').write_bytes(b'Bud1')
    if link:
        os.symlink('0.PNG', root / 'link.PNG')
    return root


def _forms(tmp_path, link: bool):
    folder = _tree(tmp_path / 'folder', link)
    image = mksquashfs(str(folder), str(tmp_path / 'packed.sqsh'))
    unpacked = tmp_path / 'unpacked'
    subprocess.run(['unsquashfs', '-q', '-n', '-d', str(unpacked), image], check=True,
                   capture_output=True)
    return str(folder), image, str(unpacked)


def _listed(root: str) -> list:
    import custom_modules.datasets.unlabeled  # noqa: F401  (registers the dataset)
    from custom_modules.fileio.sqsh_backend import resolve_data_root
    from mmpretrain.registry import DATASETS
    ds_cfg = Config.fromfile(CONFIG).train_dataloader.dataset
    ds_cfg.update(type='UnlabeledImageFolder', data_root=resolve_data_root(root))
    init_default_scope('mmpretrain')
    ds = DATASETS.build(ds_cfg)
    prefix = ds.img_prefix.rstrip('/') + '/'
    return [ds.get_data_info(i)['img_path'][len(prefix):] for i in range(len(ds))]


def test_folder_image_and_unpacked_image_list_the_same_files(tmp_path, log_file):
    folder, image, unpacked = _forms(tmp_path, link=False)
    assert _listed(folder) == _listed(image) == _listed(unpacked) == IMAGES
    skipped = [line for line in log_file.read_text().splitlines() if 'hidden' in line]
    assert len(skipped) == 3 and all('4 hidden' in line for line in skipped), skipped
    assert all("'._0.PNG'" in line for line in skipped), skipped


def test_a_symlink_is_followed_in_a_folder_and_refused_in_an_image(tmp_path, log_file):
    from custom_modules.errors import UserError
    folder, image, unpacked = _forms(tmp_path, link=True)
    assert _listed(folder) == _listed(unpacked) == ['0.PNG', '1.PNG', 'link.PNG', 'sub/2.PNG']
    with pytest.raises(UserError, match=r"'link\.PNG' is a symlink.*1 in all"):
        _listed(image)


def test_check_dataset_lists_as_the_dataset(tmp_path, capsys):
    import check_dataset
    folder, image, _ = _forms(tmp_path, link=True)
    capsys.readouterr()
    assert check_dataset.main([folder, '--workers', '1']) == 0
    out = capsys.readouterr().out
    assert 'images: 4\n' in out and 'hidden (skipped): 4' in out, out
    for quick in ([], ['--quick']):
        assert check_dataset.main([image, '--workers', '1', *quick]) == 1
        out = capsys.readouterr().out
        errors = [line for line in out.splitlines() if line.startswith('ERROR')]
        assert len(errors) == 1 and "'link.PNG' is a symlink" in errors[0], out
