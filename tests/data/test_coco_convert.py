"""tools/dataset_converters/course_to_coco.py: the course layout as COCO JSON that COCO tools
open, with the real image sizes, and that mmdet's CocoDataset reads back to exactly the boxes
and labels the course reader (LabeledDetDataset) gives."""
import filecmp
import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from dataset_converters.course_to_coco import coco_bbox, convert
from make_synthetic_data import main as make_synthetic_main
from make_synthetic_data import make_dataset

from custom_modules.datasets import LABELED_CLASSES
from custom_modules.datasets.labeled_index import CLIPPED, SIZE_MISMATCH
from custom_modules.errors import UserError
from helpers import REPO, run_tool, write_sample

SPLITS = ('training', 'validation')
TOOL = os.path.join(REPO, 'tools', 'dataset_converters', 'course_to_coco.py')


@pytest.fixture(scope='module')
def src(module_tmp):
    """Generated data, plus one hand-written image whose yml has float boxes, a box partly
    outside the image and a wrong image_size: what the converter must not take at face value."""
    out = module_tmp('course')
    make_dataset(str(out), seed=1, num_unlabeled=0, num_train=3, num_val=4)
    labeled = str(out / 'labeled')
    write_sample(labeled, 'validation', 100, size=(64, 48), label_doc=yaml.safe_dump(dict(
        image_size=[640, 480], labels=['dog', 'starfish', 'cup or mug'],
        bboxes=[[0.1, 2.7, 33.3, 40.9], [-3, 5, 20.5, 60], [7.25, 1e-3, 63.99, 47.5]])))
    return labeled


@pytest.fixture(scope='module')
def converted(src, module_tmp):
    out = str(module_tmp('coco'))
    summaries = convert(src, out, cache_dir=str(module_tmp('cache')))
    return out, summaries


def _load(out, split):
    with open(os.path.join(out, 'annotations', f'instances_{split}.json')) as f:
        return json.load(f)


def _source_ids(src, split):
    return sorted(int(n[:-len('.JPEG')]) for n in os.listdir(os.path.join(src, split, 'images')))


@pytest.mark.parametrize('module', ['pycocotools.coco', 'faster_coco_eval'])
def test_coco_tools_open_it_with_the_course_categories(converted, src, module):
    COCO = __import__(module, fromlist=['COCO']).COCO
    out, _ = converted
    for split in SPLITS:
        coco = COCO(os.path.join(out, 'annotations', f'instances_{split}.json'))
        assert coco.getCatIds() == list(range(1, 101))
        assert tuple(c['name'] for c in coco.loadCats(coco.getCatIds())) == LABELED_CLASSES
        assert sorted(coco.getImgIds()) == _source_ids(src, split)
        assert len(coco.getAnnIds()) == sum(
            len(yaml.safe_load(open(os.path.join(src, split, 'labels', f)))['bboxes'])
            for f in os.listdir(os.path.join(src, split, 'labels')))


def test_pycocotools_scores_the_ground_truth_as_perfect(converted):
    """What a user relies on the file for: COCO AP. The ground truth as detections is AP 1."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    out, _ = converted
    gt = COCO(os.path.join(out, 'annotations', 'instances_validation.json'))
    dets = gt.loadRes([dict(image_id=a['image_id'], category_id=a['category_id'],
                            bbox=a['bbox'], score=1.0) for a in gt.dataset['annotations']])
    ev = COCOeval(gt, dets, 'bbox')
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_sizes_are_the_real_image_sizes_and_files_link_to_the_source(converted, src):
    out, _ = converted
    for split in SPLITS:
        images = _load(out, split)['images']
        assert [im['id'] for im in images] == _source_ids(src, split)
        for im in images:
            assert im['file_name'] == f"{im['id']}.JPEG"
            path = os.path.join(out, split, im['file_name'])
            assert os.path.islink(path)
            assert os.path.realpath(path) == os.path.realpath(
                os.path.join(src, split, 'images', im['file_name']))
            with Image.open(path) as img:
                assert img.size == (im['width'], im['height'])
    assert {im['id']: (im['width'], im['height'])
            for im in _load(out, 'validation')['images']}[100] == (64, 48)  # not the yml's


@pytest.mark.parametrize('split', SPLITS)
@pytest.mark.parametrize('reader', ['CocoDataset', 'CocoFormatDataset'])
def test_boxes_round_trip_exactly_through_mmdet_coco_dataset(converted, src, split, reader,
                                                             tmp_path):
    """mmdet's reader given the course classes, and the project's, which takes them from the
    file, give the course reader's images, boxes and labels."""
    from mmdet.datasets import CocoDataset
    from mmengine.registry import DefaultScope

    from custom_modules.datasets import CocoFormatDataset, LabeledDetDataset
    out, summaries = converted
    with DefaultScope.overwrite_default_scope('mmdet'):
        if reader == 'CocoDataset':
            coco = CocoDataset(data_root=out, ann_file=f'annotations/instances_{split}.json',
                               data_prefix=dict(img=f'{split}/'),
                               metainfo=dict(classes=LABELED_CLASSES), test_mode=True)
        else:
            coco = CocoFormatDataset(data_root=out, split=split, test_mode=True)
        course = LabeledDetDataset(data_root=src, split=split, test_mode=True,
                                   index_cache_dir=str(tmp_path))
    assert coco.metainfo['classes'] == LABELED_CLASSES
    got = {d['img_id']: d for d in (coco.get_data_info(i) for i in range(len(coco)))}
    want = [course.get_data_info(i) for i in range(len(course))]
    assert sorted(got) == [d['img_id'] for d in want]
    for w in want:
        g = got[w['img_id']]
        assert (g['width'], g['height']) == (w['width'], w['height'])
        assert filecmp.cmp(g['img_path'], w['img_path'], shallow=False)
        # exact float equality: COCO's x + w must give back the course reader's x2
        assert [i['bbox'] for i in g['instances']] == [i['bbox'] for i in w['instances']]
        assert [i['bbox_label'] for i in g['instances']] == \
            [i['bbox_label'] for i in w['instances']]
    if split == 'validation':  # the hand-written image's boxes: floats, and one clipped
        assert [i['bbox'] for i in got[100]['instances']][1] == [0.0, 5.0, 20.5, 48.0]
        assert summaries[1].repairs[CLIPPED] == summaries[1].repairs[SIZE_MISMATCH] == 1


def test_bbox_arithmetic_is_exact_for_any_float32_box():
    rng = np.random.default_rng(0)
    x = np.sort(np.concatenate([
        rng.uniform(0, 8000, (20000, 2)), rng.uniform(0, 1, (2000, 2)),
        np.stack([rng.uniform(0, 1e-4, 2000), rng.uniform(1, 8000, 2000)], 1)]), 1)
    boxes = np.stack([x[:, 0], x[:, 0], x[:, 1], x[:, 1]], 1).astype(np.float32)
    for box in boxes:
        x1, y1, w, h = coco_bbox(box)
        assert [x1, y1, x1 + w, y1 + h] == box.tolist()


def test_link_modes_and_rerun(src, tmp_path):
    out, cache = str(tmp_path / 'out'), str(tmp_path / 'cache')
    convert(src, out, splits=['validation'], link='copy', cache_dir=cache)
    img = os.path.join(out, 'validation', '100.JPEG')
    assert not os.path.islink(img)
    assert filecmp.cmp(img, os.path.join(src, 'validation', 'images', '100.JPEG'), shallow=False)
    # a rerun replaces the copies with links and never writes through a link into the source
    convert(src, out, splits=['validation'], link='symlink', cache_dir=cache)
    convert(src, out, splits=['validation'], link='copy', cache_dir=cache)
    assert not os.path.islink(img) and os.path.getsize(
        os.path.join(src, 'validation', 'images', '100.JPEG')) > 0
    none = str(tmp_path / 'none')
    [s] = convert(src, none, splits=['validation'], link='none', cache_dir=cache)
    assert sorted(os.listdir(none)) == ['annotations'] and s.images == 5
    assert _load(none, 'validation')['annotations'] == _load(out, 'validation')['annotations']


def test_boxes_under_one_pixel_are_written_and_counted(tmp_path):
    write_sample(tmp_path / 'src', 'validation', 1, size=(64, 48),
                 bboxes=((4, 5, 30, 40), (10, 10, 10.5, 20)), labels=('dog', 'bird'))
    [s] = convert(str(tmp_path / 'src'), str(tmp_path / 'out'), splits=['validation'],
                  cache_dir=str(tmp_path / 'cache'))
    assert (s.boxes, s.under_1px) == (2, 1)
    assert "1 boxes under 1 px wide or high, which mmdet's CocoDataset skips" in s.line()


def test_sqsh_source_is_copied_and_gives_the_same_json(src, converted, tmp_path):
    from squashfs_tools import mksquashfs, mksquashfs_unavailable
    why = mksquashfs_unavailable()
    if why:
        pytest.skip(f'squashfs source not tested: {why}')
    image = mksquashfs(src, str(tmp_path / 'labeled.sqsh'))
    out, cache = str(tmp_path / 'out'), str(tmp_path / 'cache')
    summaries = convert(image, out, cache_dir=cache)
    assert all('copied, as a link cannot point into a squashfs image' in s.line()
               for s in summaries)
    folder_out, _ = converted
    for split in SPLITS:
        a, b = _load(out, split), _load(folder_out, split)
        assert {k: v for k, v in a.items() if k != 'info'} == \
            {k: v for k, v in b.items() if k != 'info'}
        for im in a['images']:
            path = os.path.join(out, split, im['file_name'])
            assert not os.path.islink(path)
            assert filecmp.cmp(path, os.path.join(src, split, 'images', im['file_name']),
                               shallow=False)
    with pytest.raises(UserError, match='link cannot point into'):
        convert(image, out, link='symlink', cache_dir=cache)


@pytest.mark.slow
def test_cli_prints_a_line_per_split_and_bad_input_is_one_error_line(src, tmp_path):
    out = str(tmp_path / 'out')
    ok = run_tool(TOOL, src, out)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert [line.split(':')[0] for line in lines] == list(SPLITS)
    assert 'validation: 5 images,' in lines[1] and 'images linked into' in lines[1]

    bad = tmp_path / 'bad'
    write_sample(bad, 'validation', 1)  # no training folder
    r = run_tool(TOOL, bad, tmp_path / 'out2')
    assert r.returncode == 2 and r.stdout == ''
    assert r.stderr.startswith('error: ') and len(r.stderr.strip().splitlines()) == 1
    assert os.path.join(str(bad), 'training') in r.stderr
    assert not os.path.exists(tmp_path / 'out2')  # every split is checked before writing


def test_make_synthetic_data_coco_writes_both_layouts(tmp_path, capsys):
    out = tmp_path / 'syn'
    make_synthetic_main(['--out', str(out), '--num-unlabeled', '0', '--num-train', '2',
                         '--num-val', '2', '--coco'])
    assert 'also as COCO JSON in labeled_coco/' in capsys.readouterr().out
    coco = out / 'labeled_coco'
    for split, ids in (('training', [1, 2]), ('validation', [3, 4])):
        doc = _load(str(coco), split)
        assert [im['id'] for im in doc['images']] == ids
        assert [c['name'] for c in doc['categories']] == list(LABELED_CLASSES)
        for i in ids:  # copies: the folder stands alone
            path = coco / split / f'{i}.JPEG'
            assert path.is_file() and not path.is_symlink()
            assert filecmp.cmp(path, out / 'labeled' / split / 'images' / f'{i}.JPEG',
                               shallow=False)
    # derived from labeled/, so a regenerated labeled set never sits beside a stale copy
    make_dataset(str(out), num_unlabeled=0, num_train=1, num_val=1, overwrite=True)
    assert not coco.exists()
