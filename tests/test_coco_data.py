"""COCO-format labeled data through the user's tools: the same images read from the course
layout and from its COCO conversion train identical weights and score identical AP; a COCO set
with its own classes and ids trains, evaluates, names its classes and resumes; bad files stop
the tools with one line before anything is built."""
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import torch

from custom_modules.datasets.classes import LABELED_CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DET = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-scratch_fpn_1xb4-demo-4e_synthetic.py')
# the demo config, shrunk in data and epochs only, loading in the main process
SHRINK = ['--cfg-options', 'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
          'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
AP_LINES = re.compile(r'^ Average (?:Precision|Recall) .*$', re.M)
THREE = {7: 'kettle', 42: 'drone', 1000: 'cactus'}  # not the course's classes, nor its ids


def tool(name, *args, check=True):
    r = subprocess.run([sys.executable, os.path.join(REPO, 'tools', name), *args], cwd=REPO,
                       capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope='module')
def course_and_coco(module_tmp):
    """(course root, its COCO conversion) of one small generated set."""
    from dataset_converters.course_to_coco import convert
    from make_synthetic_data import make_dataset
    out = module_tmp('coco-data')
    make_dataset(str(out / 'syn'), seed=3, num_unlabeled=0, num_train=8, num_val=4,
                 min_size=96, max_size=160)
    convert(str(out / 'syn' / 'labeled'), str(out / 'coco'))
    return str(out / 'syn' / 'labeled'), str(out / 'coco')


@pytest.fixture(scope='module')
def three_classes(course_and_coco, module_tmp):
    """The converted set relabelled: its 3 most frequent classes as ids 7, 42, 1000 (in the
    order 1000, 7, 42 in the file, so label order != id order), the other boxes dropped."""
    _, coco = course_and_coco
    root = module_tmp('three')
    os.makedirs(root / 'annotations')
    for split in ('training', 'validation'):
        data = json.load(open(os.path.join(coco, 'annotations', f'instances_{split}.json')))
        if split == 'training':
            top = [c for c, _ in Counter(a['category_id'] for a in data['annotations']).most_common(3)]
            new_id = dict(zip(top, THREE))
        data['categories'] = [dict(id=i, name=THREE[i]) for i in (1000, 7, 42)]
        data['annotations'] = [dict(a, category_id=new_id[a['category_id']])
                               for a in data['annotations'] if a['category_id'] in new_id]
        json.dump(data, open(root / 'annotations' / f'instances_{split}.json', 'w'))
        os.symlink(os.path.join(coco, split), root / split)
    return str(root)


def train(data_args, work_dir, epochs=1, *extra):
    return tool('train.py', DET, '--work-dir', work_dir, *data_args, *extra, *SHRINK,
                f'train_cfg.max_epochs={epochs}')


def test_course_layout_and_its_coco_conversion_train_and_score_the_same(course_and_coco, tmp_path):
    course, coco = course_and_coco
    ckpts, summaries = [], []
    for name, root in (('course', course), ('coco', coco)):
        work = str(tmp_path / name)
        train(['--data-root', root], work)
        ckpt = os.path.join(work, 'epoch_1.pth')
        ckpts.append(torch.load(ckpt, map_location='cpu', weights_only=False))
        out = tool('test.py', DET, ckpt, '--data-root', root, '--split', 'validation',
                   '--work-dir', str(tmp_path / f'{name}-test'), *SHRINK).stdout
        summaries.append(AP_LINES.findall(out))
        assert len(summaries[-1]) == 12, out[-3000:]
    a, b = (c['state_dict'] for c in ckpts)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert ckpts[0]['meta']['dataset_meta']['classes'] == ckpts[1]['meta']['dataset_meta']['classes']
    assert summaries[0] == summaries[1]


def test_own_classes_train_evaluate_name_and_resume(three_classes, course_and_coco, tmp_path):
    work = str(tmp_path / 'three')
    first = train(['--data-root', three_classes], work)
    ckpt = torch.load(os.path.join(work, 'epoch_1.pth'), map_location='cpu', weights_only=False)
    # the model follows the data: 3 classes + background, named in the file's category order
    assert ckpt['state_dict']['roi_head.bbox_head.fc_cls.weight'].shape[0] == 4
    assert ckpt['meta']['dataset_meta']['classes'] == ('cactus', 'kettle', 'drone')
    assert 'train.py: starting a new run in' in first.stdout, first.stdout[-2000:]
    resumed = train(['--data-root', three_classes], work, 2, '--resume')
    assert re.search(r'train.py: resuming from \S+epoch_1.pth \(latest resume point', resumed.stdout), resumed.stdout[-2000:]
    assert os.path.isfile(os.path.join(work, 'epoch_2.pth'))
    last = os.path.join(work, 'epoch_2.pth')
    out = tool('test.py', DET, last, '--data-root', three_classes, '--split', 'validation',
               '--classwise', '--work-dir', str(tmp_path / 'test'), *SHRINK).stdout
    assert len(AP_LINES.findall(out)) == 12, out[-3000:]
    assert "would print" not in out  # the seed-comparable line is for the course's classes
    csv = open(next(os.path.join(d, f) for d, _, fs in os.walk(tmp_path / 'test') for f in fs
                    if f == 'classwise_ap.csv')).read()
    assert [line.split(',')[0] for line in csv.splitlines()[1:]] == ['cactus', 'kettle', 'drone']
    # infer.py names and draws the checkpoint's classes
    images = os.path.join(three_classes, 'validation')
    tool('infer.py', DET, last, images, '--num', '2', '--score-thr', '0',
         '--out-dir', str(tmp_path / 'infer'))
    found = [json.load(open(os.path.join(tmp_path / 'infer', f)))
             for f in os.listdir(tmp_path / 'infer') if f.endswith('.json')]
    assert len(found) == 2
    labels = {d['label'] for f in found for d in f['detections']}
    assert labels and labels <= {'cactus', 'kettle', 'drone'}, labels
    # and refuses it on the course's 100 classes, naming both lists
    course, _ = course_and_coco
    for name, args in (('test.py', [DET, last, '--data-root', course, '--split', 'validation']),
                       ('infer.py', [DET, last, images, '--data-root', course])):
        r = tool(name, *args, check=False)
        assert r.returncode == 2, r.stderr[-2000:]
        assert re.fullmatch(r"error: \S+epoch_2\.pth was trained on 3 classes \('cactus', 'kettle', "
                            r"'drone'\), but \S+ \(split validation\) has 100 classes \('cup or mug', "
                            r"'bird', 'hat with a wide brim', 'person', \.\.\.\): .*\n", r.stderr), r.stderr


def test_browse_dataset_draws_coco_data(three_classes, tmp_path):
    out = tool('browse_dataset.py', DET, '--data-root', three_classes, '--num', '2',
               '--out-dir', str(tmp_path / 'browse')).stdout
    assert re.search(r'^2 of 8 images drawn \(ground truth after the train pipeline\)', out,
                     re.M), out
    assert len(os.listdir(tmp_path / 'browse')) == 2


def _broken(root, split, edit):
    data = json.load(open(os.path.join(root, 'annotations', f'instances_{split}.json')))
    return edit(data)


@pytest.mark.parametrize('case, edit, message', [
    ('malformed', None, r'annotations/instances_training\.json: not valid JSON \(.*\)'),
    ('missing key', lambda d: d['images'][2].pop('file_name'),
     r'instances_training\.json: images\[2\] \(id \d+\) has no "file_name"'),
    ('unknown image', lambda d: d['annotations'][1].update(image_id=99999),
     r'instances_training\.json: annotations\[1\] \(id \d+\): image_id 99999 is not in "images"'),
    ('unknown category', lambda d: d['annotations'][0].update(category_id=5),
     r'instances_training\.json: annotations\[0\] \(id \d+\): category_id 5 is not in "categories"'),
    ('missing file', lambda d: d['images'][3].update(file_name='nowhere.JPEG'),
     r'instances_training\.json: images\[3\] \(id \d+\): file \S+/training/nowhere\.JPEG does not exist'),
])
def test_bad_coco_input_stops_train_py_with_one_line(three_classes, tmp_path, case, edit, message):
    root = tmp_path / 'bad'
    shutil.copytree(three_classes, root, symlinks=True)
    ann = root / 'annotations' / 'instances_training.json'
    if edit is None:
        ann.write_text(ann.read_text()[:-20])
    else:
        data = json.load(open(ann))
        edit(data)
        json.dump(data, open(ann, 'w'))
    if case == 'malformed':  # the whole tool, as a user runs it
        r = tool('train.py', DET, '--data-root', str(root), '--work-dir', str(tmp_path / 'w'),
                 check=False)
        assert r.returncode == 2 and r.stdout == ''
        assert re.fullmatch(f'error: \\S+{message}\n', r.stderr), r.stderr
        assert not os.path.exists(tmp_path / 'w')  # nothing written before the check
        return
    from train import build_cfg, parse_args

    from custom_modules.user_errors import UserError
    with pytest.raises(UserError, match=message):
        build_cfg(parse_args([DET, '--data-root', str(root), '--work-dir', str(tmp_path / 'w')]))


def test_check_dataset_lists_every_coco_problem(three_classes, tmp_path):
    root = tmp_path / 'bad'
    shutil.copytree(three_classes, root, symlinks=True)
    ann = root / 'annotations' / 'instances_validation.json'
    data = json.load(open(ann))
    first, second = data['images'][0], data['images'][1]
    data['images'].append(dict(first))  # duplicate image id
    data['images'].append(dict(id=123456, file_name='gone.JPEG', width=10, height=10))
    data['annotations'] += [
        dict(id=900001, image_id=first['id'], category_id=7, bbox=[5, 5, 0, 10], area=0),
        dict(id=900002, image_id=second['id'], category_id=7,
             bbox=[second['width'] - 5, 2, 40, 10], area=400),
        dict(id=900003, image_id=second['id'], category_id=3, bbox=[1, 1, 5, 5], area=25)]
    json.dump(data, open(ann, 'w'))
    r = tool('check_dataset.py', str(root), '--split', 'validation', check=False)
    out = r.stdout
    assert r.returncode == 1, out
    for kind in ('duplicate id or name', 'missing image file', 'box with non-positive size',
                 'box outside the image', 'unknown category id'):
        assert re.search(rf'^ERROR: 1 x {kind}$', out, re.M), (kind, out)
    assert re.search(r'^images without annotations: [1-9]\d* \(kept as negatives', out, re.M), out
    assert 'FAILED: 5 errors' in out
    ok = tool('check_dataset.py', three_classes)
    assert ok.stdout.rstrip().endswith('OK') and ok.stdout.count('== ') == 2
