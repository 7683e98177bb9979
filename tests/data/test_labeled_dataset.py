"""LabeledDetDataset: the boxes and labels a user wrote come out, and bad files say what is wrong."""
import glob
import os

import numpy as np
import pytest
import yaml
from mmengine.registry import DefaultScope

import custom_modules  # noqa: F401  registers LabeledDetDataset
from custom_modules.datasets import LABELED_CLASSES, LabeledDataError
from mmdet.registry import DATASETS
from helpers import write_sample


@pytest.fixture(autouse=True)
def mmdet_scope():
    """Types resolve in mmdet's registry whatever scope an earlier test module left current."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def build(root, split='training', cache_dir=None, **kwargs):
    return DATASETS.build(dict(type='LabeledDetDataset', data_root=root, split=split,
                               index_cache_dir=cache_dir, pipeline=[], **kwargs))


def test_yields_exactly_the_yml_boxes_and_labels(synthetic_root, cache_dir):
    root = os.path.join(synthetic_root, 'labeled')
    for split in ('training', 'validation'):
        ds = build(root, split, cache_dir, test_mode=True)
        ymls = sorted(glob.glob(os.path.join(root, split, 'labels', '*.yml')))
        assert len(ds) == len(ymls) > 0
        by_id = {ds.get_data_info(i)['img_id']: ds.get_data_info(i) for i in range(len(ds))}
        for path in ymls:
            doc = yaml.safe_load(open(path))
            info = by_id[int(os.path.basename(path)[:-4])]
            assert info['img_path'].endswith(os.path.join(split, 'images', f"{info['img_id']}.JPEG"))
            assert [info['width'], info['height']] == doc['image_size']
            got_boxes = [inst['bbox'] for inst in info['instances']]
            np.testing.assert_allclose(got_boxes, doc['bboxes'], rtol=0, atol=1e-4)
            assert [LABELED_CLASSES[inst['bbox_label']] for inst in info['instances']] == doc['labels']
    assert ds.metainfo['classes'] == LABELED_CLASSES and len(ds.metainfo['palette']) == 100


def test_pipeline_output_matches_yml(synthetic_root, cache_dir):
    root = os.path.join(synthetic_root, 'labeled')
    ds = DATASETS.build(dict(
        type='LabeledDetDataset', data_root=root, split='validation', index_cache_dir=cache_dir,
        test_mode=True, pipeline=[
            dict(type='LoadImageNamed', imdecode_backend='pillow',
                 color_type='color_ignore_orientation'),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='PackDetInputs')]))
    sample = ds[0]
    info = ds.get_data_info(0)
    doc = yaml.safe_load(open(info['img_path'].replace('images', 'labels').replace('.JPEG', '.yml')))
    assert tuple(sample['inputs'].shape) == (3, doc['image_size'][1], doc['image_size'][0])
    np.testing.assert_allclose(sample['data_samples'].gt_instances.bboxes.tensor.numpy(),
                               doc['bboxes'], atol=1e-4)
    assert [LABELED_CLASSES[i] for i in sample['data_samples'].gt_instances.labels] == doc['labels']
    assert sample['data_samples'].img_id == info['img_id']


def test_ids_need_not_be_contiguous_and_size_comes_from_header(tmp_path, cache_dir):
    write_sample(tmp_path, 'validation', 30001, size=(80, 60), image_size=False)
    write_sample(tmp_path, 'validation', 30457, size=(50, 70), labels=('starfish',))
    ds = build(str(tmp_path), 'validation', cache_dir)
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    assert [(d['img_id'], d['width'], d['height']) for d in infos] == [(30001, 80, 60), (30457, 50, 70)]
    assert infos[1]['instances'][0]['bbox_label'] == 99


@pytest.mark.parametrize('doc, kind, words', [
    ('bboxes: [[1, 2, 10, 12]]\nlabels: [unicorn]\n', 'unknown class name', 'unicorn'),
    ('bboxes: [[1, 2, 10, 12], [3, 3, 9, 9]]\nlabels: [dog]\n', 'length mismatch', '2 bboxes but 1 labels'),
    ('bboxes: [[1, 2, 10, 12]\nlabels: [dog\n', 'invalid YAML', 'invalid YAML'),
    ('labels: [dog]\n', 'missing keys', 'bboxes'),
    ('bboxes: [[1, 2, 10]]\nlabels: [dog]\n', 'malformed box', '[1, 2, 10]'),
])
def test_bad_label_file_names_file_and_problem(tmp_path, cache_dir, doc, kind, words):
    write_sample(tmp_path, 'training', 1)
    _, bad = write_sample(tmp_path, 'training', 2, label_doc=doc)
    with pytest.raises(LabeledDataError) as e:
        build(str(tmp_path), cache_dir=cache_dir)
    assert bad in str(e.value) and words in str(e.value)
    assert kind.split()[0] in e.value.kind


def test_unpaired_files_are_errors(tmp_path, cache_dir):
    write_sample(tmp_path, 'training', 1)
    _, orphan_yml = write_sample(tmp_path, 'training', 2)
    os.remove(orphan_yml.replace('labels', 'images').replace('.yml', '.JPEG'))
    orphan_img, _ = write_sample(tmp_path, 'training', 3, label_doc=False)
    with pytest.raises(LabeledDataError) as e:
        build(str(tmp_path), cache_dir=cache_dir)
    assert orphan_yml in str(e.value) and orphan_img in str(e.value)


def test_missing_split_folder(tmp_path, cache_dir):
    write_sample(tmp_path, 'training', 1)
    with pytest.raises(FileNotFoundError, match='validation'):
        build(str(tmp_path), 'validation', cache_dir)


def test_bad_boxes_are_repaired_counted_and_logged(tmp_path, cache_dir):
    write_sample(tmp_path, 'training', 1, size=(64, 48), labels=('dog',) * 5, bboxes=(
        (4, 5, 30, 40),       # fine
        (30, 5, 30, 40),      # x2 == x1: dropped
        (10, 40, 20, 30),     # y2 < y1: dropped
        (-5, 10, 70, 60),     # partly outside: clipped to 0,10,64,48
        (100, 100, 120, 130),  # fully outside: dropped
    ))
    ds = build(str(tmp_path), cache_dir=cache_dir)
    boxes = [inst['bbox'] for inst in ds.get_data_info(0)['instances']]
    assert boxes == [[4, 5, 30, 40], [0, 10, 64, 48]]
    problems = ds.index_report.problems
    assert problems['box with x2<=x1 or y2<=y1 dropped'] == 2
    assert problems['box clipped to image'] == 1
    assert problems['box outside image dropped'] == 1


def test_wrong_image_size_in_yml_replaced_by_header(tmp_path, cache_dir):
    doc = 'bboxes: [[4, 5, 100, 80]]\nlabels: [dog]\nimage_size: [128, 96]\n'
    _, yml = write_sample(tmp_path, 'training', 1, size=(64, 48), label_doc=doc)
    ds = build(str(tmp_path), cache_dir=cache_dir)
    info = ds.get_data_info(0)
    assert (info['width'], info['height']) == (64, 48)
    assert info['instances'][0]['bbox'] == [4, 5, 64, 48]  # clipped to the real image
    report = ds.index_report
    assert report.problems['image_size in yml differs from the image header; header used'] == 1
    assert report.examples['image_size in yml differs from the image header; header used'] == [yml]
    assert report.problems['box clipped to image'] == 1


def test_images_without_objects_kept_unless_filter_cfg_drops_them(tmp_path, cache_dir):
    write_sample(tmp_path, 'training', 1)
    write_sample(tmp_path, 'training', 2, bboxes=(), labels=())
    assert len(build(str(tmp_path), cache_dir=cache_dir, test_mode=True)) == 2
    train = build(str(tmp_path), cache_dir=cache_dir, filter_cfg=dict(filter_empty_gt=True))
    assert len(train) == 1 and train.index_report.problems['image without objects'] == 1


def test_metainfo_subset_remaps_and_counts_dropped(tmp_path, cache_dir):
    write_sample(tmp_path, 'training', 1, labels=('dog', 'starfish'), bboxes=((1, 1, 9, 9), (2, 2, 8, 8)))
    ds = build(str(tmp_path), cache_dir=cache_dir, metainfo=dict(classes=('starfish', 'cup or mug')))
    assert [i['bbox_label'] for i in ds.get_data_info(0)['instances']] == [0]
    assert ds.index_report.problems['box of a class not in metainfo classes dropped'] == 1


def test_index_cache_reused_and_invalidated(tmp_path, cache_dir):
    write_sample(tmp_path, 'training', 1)
    assert not build(str(tmp_path), cache_dir=cache_dir).index_report.from_cache
    assert build(str(tmp_path), cache_dir=cache_dir).index_report.from_cache
    # a changed file (size or mtime) must re-index
    write_sample(tmp_path, 'training', 1, labels=('starfish',))
    ds = build(str(tmp_path), cache_dir=cache_dir)
    assert not ds.index_report.from_cache
    assert ds.get_data_info(0)['instances'][0]['bbox_label'] == 99


def test_index_cache_hit_from_another_cwd_gives_usable_paths(tmp_path, cache_dir, monkeypatch):
    write_sample(tmp_path / 'data', 'training', 1)
    monkeypatch.chdir(tmp_path)
    assert not build('data', cache_dir=cache_dir).index_report.from_cache
    monkeypatch.chdir(tmp_path / 'data')
    ds = build('.', cache_dir=cache_dir)
    assert ds.index_report.from_cache
    assert os.path.isfile(ds.get_data_info(0)['img_path'])


def test_parallel_index_matches_serial(tmp_path, cache_dir):
    from custom_modules.datasets.labeled_index import load_split
    for i in range(1, 41):
        write_sample(tmp_path, 'training', i, size=(32, 32) if i % 2 else (40, 20),
                     bboxes=((1, 1, 9, 9),), labels=(LABELED_CLASSES[i],), image_size=bool(i % 3))
    write_sample(tmp_path, 'training', 41, size=(40, 20),
                 label_doc='bboxes: [[1, 1, 39, 19]]\nlabels: [dog]\nimage_size: [20, 40]\n')
    serial, serial_report = load_split(str(tmp_path), 'training', use_cache=False, num_workers=1)
    import custom_modules.datasets.labeled_index as li
    old, li._PARALLEL_MIN_FILES = li._PARALLEL_MIN_FILES, 1
    try:
        parallel, parallel_report = load_split(str(tmp_path), 'training', use_cache=False,
                                               num_workers=2)
    finally:
        li._PARALLEL_MIN_FILES = old
    assert parallel_report.problems == serial_report.problems
    assert serial_report.problems[li.SIZE_MISMATCH] == 1 and serial[-1].width == 40
    assert [(r.img_id, r.width, r.height, r.bboxes.tolist(), r.labels.tolist()) for r in serial] == \
        [(r.img_id, r.width, r.height, r.bboxes.tolist(), r.labels.tolist()) for r in parallel]


def _load(img_path):
    from mmdet.registry import TRANSFORMS
    load = TRANSFORMS.build(dict(type='LoadImageNamed', imdecode_backend='pillow',
                                 color_type='color_ignore_orientation'))
    return load(dict(img_path=img_path))


def test_corrupt_image_header_is_an_error_naming_the_file(tmp_path, cache_dir):
    img, _ = write_sample(tmp_path, 'training', 1, image_size=False)
    with open(img, 'wb') as f:
        f.write(b'not a jpeg at all')
    with pytest.raises(LabeledDataError, match=f'{img}: cannot read image header'):
        build(str(tmp_path), cache_dir=cache_dir)
    with pytest.raises(OSError, match=f'{img}: cannot decode image'):
        _load(img)


def test_truncated_image_fails_at_load_naming_the_file(tmp_path):
    img, _ = write_sample(tmp_path, 'training', 1, size=(128, 96))
    data = open(img, 'rb').read()
    with open(img, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(OSError, match=f'{img}: cannot decode image'):
        _load(img)


@pytest.mark.parametrize('mode', ['L', 'CMYK', 'RGBA'])
def test_grayscale_cmyk_rgba_load_as_three_channels(tmp_path, mode):
    from PIL import Image
    img, _ = write_sample(tmp_path, 'training', 1, size=(40, 30))
    if mode == 'RGBA':  # JPEG cannot hold alpha; the real set may still contain such PNG-in-JPEG files
        img = img.replace('.JPEG', '.png')
        Image.new('RGBA', (40, 30), (10, 200, 30, 128)).save(img)
    else:
        Image.open(img.replace('.png', '.JPEG')).convert(mode).save(img, format='JPEG')
    assert Image.open(img).mode == mode
    out = _load(img)
    assert out['img'].shape == (30, 40, 3) and out['img'].dtype == np.uint8


def test_index_cache_notices_a_same_size_label_edit_inside_a_repacked_image(tmp_path, cache_dir):
    """Files inside a squashfs image have no mtime of their own (0 with -all-time 0), and a
    same-size edit can leave the image's size and superblock as they were (always with file data
    stored uncompressed, as JPEG sets often are): the cache key holds the label files' content,
    so the edited boxes come out."""
    from squashfs_tools import mksquashfs, mksquashfs_unavailable
    why = mksquashfs_unavailable()
    if why:
        pytest.skip(why)
    from custom_modules.fileio import squashfs
    from custom_modules.datasets.labeled_index import load_split
    src = tmp_path / 'labeled'
    write_sample(str(src), 'training', 1, size=(64, 48), bboxes=((10, 8, 50, 40),))
    image = str(tmp_path / 'labeled.sqsh')
    times = ('-mkfs-time', '0', '-all-time', '0', '-noD', '-noF')
    mksquashfs(str(src), image, *times)
    records, report = load_split('sqsh://' + image, 'training', cache_dir=cache_dir)
    assert records[0].bboxes.tolist() == [[10, 8, 50, 40]] and not report.from_cache
    label = src / 'training' / 'labels' / '1.yml'
    text = label.read_text()
    label.write_text(text.replace('- 10\n', '- 12\n'))
    assert len(label.read_text()) == len(text) and label.read_text() != text
    head = open(image, 'rb').read(96)
    mksquashfs(str(src), image, *times)
    squashfs.forget_image(image)  # as a new process would open it
    assert open(image, 'rb').read(96) == head  # what the key held before: the same
    records, report = load_split('sqsh://' + image, 'training', cache_dir=cache_dir)
    assert records[0].bboxes.tolist() == [[12, 8, 50, 40]]
