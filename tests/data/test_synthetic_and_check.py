"""The generator writes the real layouts deterministically; check_dataset reports and fails right."""
import filecmp
import os

import yaml

import check_dataset
from make_synthetic_data import make_dataset

from custom_modules.datasets import LABELED_CLASSES
from helpers import REPO, write_sample


def test_layout_and_labels(synthetic_root):
    lab = os.path.join(synthetic_root, 'labeled')
    train_ids = sorted(int(f[:-4]) for f in os.listdir(os.path.join(lab, 'training', 'labels')))
    val_ids = sorted(int(f[:-4]) for f in os.listdir(os.path.join(lab, 'validation', 'labels')))
    assert train_ids == list(range(1, 25)) and val_ids == list(range(25, 37))
    assert sorted(os.listdir(os.path.join(synthetic_root, 'unlabeled')))[:2] == ['0.PNG', '1.PNG']
    sizes, n_small = set(), 0
    for split, ids in (('training', train_ids), ('validation', val_ids)):
        for i in ids:
            assert os.path.isfile(os.path.join(lab, split, 'images', f'{i}.JPEG'))
            doc = yaml.safe_load(open(os.path.join(lab, split, 'labels', f'{i}.yml')))
            w, h = doc['image_size']
            sizes.add((w, h))
            assert len(doc['bboxes']) == len(doc['labels']) >= 1
            for (x1, y1, x2, y2), name in zip(doc['bboxes'], doc['labels']):
                assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and name in LABELED_CLASSES
                n_small += (x2 - x1) * (y2 - y1) < 32 ** 2
    assert len(sizes) > 10 and n_small > 0  # varied image sizes, some COCO-small objects


def test_deterministic_for_a_seed(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    for out in (a, b):
        make_dataset(str(out), seed=3, num_unlabeled=3, num_train=4, num_val=2)
    cmp = filecmp.dircmp(a / 'labeled' / 'training' / 'images', b / 'labeled' / 'training' / 'images')
    assert not cmp.diff_files and len(cmp.same_files) == 4
    assert filecmp.cmp(a / 'unlabeled' / '2.PNG', b / 'unlabeled' / '2.PNG', shallow=False)


def test_check_dataset_ok_on_generated_data(synthetic_root, capsys):
    assert check_dataset.main([os.path.join(synthetic_root, 'labeled'), '--decode', '--workers', '1']) == 0
    out = capsys.readouterr().out
    assert 'training' in out and 'validation' in out and 'box sizes (COCO): small' in out
    assert check_dataset.main([os.path.join(synthetic_root, 'unlabeled'), '--workers', '1']) == 0
    assert '\nimages: 16' in capsys.readouterr().out


def test_check_dataset_unlabeled_matches_images_in_any_case(tmp_path, capsys):
    from PIL import Image
    for name, fmt in (('a.png', 'PNG'), ('b.PNG', 'PNG'), ('sub/c.Png', 'PNG'), ('sub/d.JPG', 'JPEG'),
                      ('e.tif', 'TIFF')):
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        Image.new('RGB', (8, 8)).save(tmp_path / name, format=fmt)
    (tmp_path / 'notes.txt').write_text('not an image')
    assert check_dataset.main([str(tmp_path), '--workers', '1']) == 0
    out = capsys.readouterr().out
    assert '\nimages: 5' in out and '.txt: 1' in out


def test_check_dataset_looks_for_what_the_pretraining_configs_read():
    from mmengine.config import Config
    for name in ('mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py',
                 'mae/mae_vit-base-p16_4xb64-amp-coslr-80e_unlabeled224.py'):
        cfg = Config.fromfile(os.path.join(REPO, 'configs', name))
        assert tuple(cfg.train_dataloader.dataset.extensions) == check_dataset.IMAGE_EXTENSIONS


def test_check_dataset_lists_every_problem(tmp_path, capsys):
    write_sample(tmp_path, 'validation', 1)
    write_sample(tmp_path, 'validation', 2, label_doc='bboxes: [[1, 2, 3, 4]]\nlabels: [unicorn]\n')
    write_sample(tmp_path, 'validation', 3, label_doc='bboxes: [\n')
    write_sample(tmp_path, 'validation', 4, label_doc=False)
    write_sample(tmp_path, 'validation', 5, bboxes=((-3, 0, 10, 10),))
    img, _ = write_sample(tmp_path, 'validation', 6, size=(120, 90))
    data = open(img, 'rb').read()
    open(img, 'wb').write(data[:len(data) // 2])
    assert check_dataset.main([str(tmp_path), '--decode', '--workers', '1']) == 1
    out = capsys.readouterr().out
    for words in ('unknown class name', 'invalid YAML', 'image without yml or yml without image',
                  'unreadable image', 'repaired: 1 x box clipped to image', 'FAILED: 4 errors'):
        assert words in out, words


def test_check_dataset_repairs_image_size_like_the_dataset(tmp_path, capsys, cache_dir):
    """A yml image_size that differs from the header is a repair (header used), not an error."""
    from custom_modules.datasets.labeled_index import SIZE_MISMATCH, load_split
    write_sample(tmp_path, 'validation', 1)
    # 64x48 image whose yml claims 50x40: the box fits the real image, so nothing is clipped
    write_sample(tmp_path, 'validation', 2, label_doc='bboxes: [[4, 5, 60, 45]]\n'
                 'labels: [dog]\nimage_size: [50, 40]\n')
    assert check_dataset.main([str(tmp_path), '--workers', '1']) == 0
    out = capsys.readouterr().out
    assert f'repaired: 1 x {SIZE_MISMATCH}, e.g. ' in out and '[50, 40]' in out
    assert 'ERROR' not in out and 'clipped' not in out and out.rstrip().endswith('OK')
    _, report = load_split(str(tmp_path), 'validation', cache_dir=cache_dir)
    assert dict(report.problems) == {SIZE_MISMATCH: 1}


def test_check_dataset_missing_split(tmp_path, capsys):
    write_sample(tmp_path, 'training', 1)
    assert check_dataset.main([str(tmp_path), '--split', 'validation', '--workers', '1']) == 1
    assert 'does not exist' in capsys.readouterr().out
