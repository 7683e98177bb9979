"""COCO-format labeled data through the user's tools: the same images read from the course
layout and from its COCO conversion train identical weights and score identical AP; a COCO set
with its own classes and ids trains, evaluates, names its classes and resumes, through every
detection config and through the explicit annotation-file / image-folder flags; bad files stop
the tools with one line before anything is built."""
import glob
import json
import os
import pickle
import re
import shutil
from collections import Counter

import pytest
import torch

from custom_modules.datasets.classes import LABELED_CLASSES
from helpers import REPO, run_tool


DET = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-scratch_fpn_1xb4-demo-4e_synthetic.py')
# the demo config, shrunk in data and epochs only, loading in the main process
SHRINK = ['--cfg-options', 'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
          'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
# every box the barely trained detector returns, so that the AP compared is not all zeros
SCORE_ALL = 'model.test_cfg.rcnn.score_thr=0.0'
AP_LINES = re.compile(r'^ Average (?:Precision|Recall) .*$', re.M)
THREE = {7: 'kettle', 42: 'drone', 1000: 'cactus'}  # not the course's classes, nor its ids
NAMES = ('cactus', 'kettle', 'drone')  # the file's category order
DET_CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', 'faster_rcnn', '*.py'))
                     + glob.glob(os.path.join(REPO, 'configs', 'vitdet', '*.py'))
                     + glob.glob(os.path.join(REPO, 'configs', 'soft_teacher', '*.py')))
STEP = os.path.join(REPO, 'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py')


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


def tool_error(capsys, module, argv):
    """(stderr, exit status) of a tool's main run in this process as its command line runs it."""
    from toolkit.bootstrap import run as run_main
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_main(module.main, argv)
    return capsys.readouterr().err, e.value.code


def train(data_args, work_dir, epochs=1, *extra):
    return run_tool('train.py', DET, '--work-dir', work_dir, *data_args, *extra, *SHRINK,
                    f'train_cfg.max_epochs={epochs}', check=True)


@pytest.mark.slow
def test_course_layout_and_its_coco_conversion_train_and_score_the_same(course_and_coco, tmp_path):
    course, coco = course_and_coco
    ckpts, summaries, predictions = [], [], []
    for name, root in (('course', course), ('coco', coco)):
        work = str(tmp_path / name)
        train(['--data-root', root], work)
        ckpt = os.path.join(work, 'epoch_1.pth')
        ckpts.append(torch.load(ckpt, map_location='cpu', weights_only=False))
        pkl = str(tmp_path / f'{name}.pkl')
        out = run_tool('test.py', DET, ckpt, '--data-root', root, '--split', 'validation',
                       '--out', pkl, '--work-dir', str(tmp_path / f'{name}-test'),
                       *SHRINK, SCORE_ALL, check=True).stdout
        summaries.append(AP_LINES.findall(out))
        assert len(summaries[-1]) == 12, out[-3000:]
        with open(pkl, 'rb') as f:
            predictions.append(pickle.load(f))
    a, b = (c['state_dict'] for c in ckpts)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert ckpts[0]['meta']['dataset_meta']['classes'] == ckpts[1]['meta']['dataset_meta']['classes']
    assert summaries[0] == summaries[1]
    # two iterations score AP 0 on both sides, so the lines alone prove little: what AP is
    # computed from is compared too, image for image (same order), the ground truth and every
    # detection's box, score and label
    course_preds, coco_preds = predictions
    assert [p['img_id'] for p in course_preds] == [p['img_id'] for p in coco_preds]
    assert sum(len(p['pred_instances']['labels']) for p in course_preds) > 0
    for p, q in zip(course_preds, coco_preds):
        assert [(i['bbox'], i['bbox_label']) for i in p['instances']] == \
            [(i['bbox'], i['bbox_label']) for i in q['instances']], p['img_id']
        for k in ('bboxes', 'scores', 'labels'):
            assert torch.equal(p['pred_instances'][k], q['pred_instances'][k]), (p['img_id'], k)
        assert tuple(p['classes']) == tuple(q['classes']) == LABELED_CLASSES


@pytest.mark.slow
def test_own_classes_train_evaluate_name_and_resume(three_classes, course_and_coco, tmp_path,
                                                    capsys):
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
    # evaluated through the explicit flag: an annotation file and an image folder
    ann = os.path.join(three_classes, 'annotations', 'instances_validation.json')
    images = os.path.join(three_classes, 'validation')
    pkl = str(tmp_path / 'preds.pkl')
    out = run_tool('test.py', DET, last, '--coco', ann, images, '--classwise', '--out', pkl,
                   '--work-dir', str(tmp_path / 'test'), *SHRINK, SCORE_ALL, check=True).stdout
    assert len(AP_LINES.findall(out)) == 12, out[-3000:]
    assert "would print" not in out  # the seed-comparable line is for the course's classes
    csv = open(next(os.path.join(d, f) for d, _, fs in os.walk(tmp_path / 'test') for f in fs
                    if f == 'classwise_ap.csv')).read()
    assert [line.split(',')[0] for line in csv.splitlines()[1:]] == list(NAMES)
    # infer.py names and draws the checkpoint's classes
    run_tool('infer.py', DET, last, images, '--num', '2', '--score-thr', '0',
             '--out-dir', str(tmp_path / 'infer'), check=True)
    found = [json.load(open(os.path.join(tmp_path / 'infer', f)))
             for f in os.listdir(tmp_path / 'infer') if f.endswith('.json')]
    assert len(found) == 2
    labels = {d['label'] for f in found for d in f['detections']}
    assert labels and labels <= set(NAMES), labels
    # and refuses it on the course's 100 classes, naming both lists
    course, coco = course_and_coco
    course_ann = os.path.join(coco, 'annotations', 'instances_validation.json')
    for name, args, data in (
            ('test.py', [DET, last, '--data-root', course, '--split', 'validation'],
             r'\S+ \(split validation\)'),
            ('infer.py', [DET, last, images, '--coco', course_ann, images],
             r'\S+instances_validation\.json')):
        r = run_tool(name, *args)
        assert r.returncode == 2, r.stderr[-2000:]
        assert re.fullmatch(r"error: \S+epoch_2\.pth was trained on 3 classes \('cactus', 'kettle', "
                            rf"'drone'\), but {data} has 100 classes \('cup or mug', "
                            r"'bird', 'hat with a wide brim', 'person', \.\.\.\): .*\n", r.stderr), r.stderr
    # the predictions file names its classes: per-class results without naming the data
    plot_predictions(pkl, tmp_path, three_classes, course, capsys)


def plot_predictions(pkl, tmp_path, three_classes, course, capsys):
    """tools/plot_curves.py --predictions on a 3-class test.py --out file: the class names it
    records, or those of --ann-file / --data-root when they are the same; other data, or a file
    that records none and no data named, is one error line."""
    import plot_curves
    ann = os.path.join(three_classes, 'annotations', 'instances_validation.json')
    for i, extra in enumerate(([], ['--ann-file', ann], ['--data-root', three_classes])):
        out = tmp_path / f'plot{i}'
        plot_curves.main(['--predictions', pkl, '--out-dir', str(out), *extra])
        rows = (out / 'classwise_ap.csv').read_text().splitlines()[1:]
        assert [r.split(',')[0] for r in rows] == list(NAMES)
        assert (out / 'confusion_matrix.png').stat().st_size > 0
    err, code = tool_error(capsys, plot_curves, ['--predictions', pkl, '--data-root', course])
    assert code == 2 and re.fullmatch(
        r"error: \S+preds\.pkl was made on 3 classes \('cactus', 'kettle', 'drone'\), but \S+ "
        r"\(the course table\) has 100 classes .*\n", err), err
    with open(pkl, 'rb') as f:
        unnamed = [{k: v for k, v in p.items() if k != 'classes'} for p in pickle.load(f)]
    with open(tmp_path / 'unnamed.pkl', 'wb') as f:
        pickle.dump(unnamed, f)
    err, code = tool_error(capsys, plot_curves, ['--predictions', str(tmp_path / 'unnamed.pkl')])
    assert code == 2 and re.fullmatch(r'error: \S+unnamed\.pkl does not record the names of its '
                                      r'classes: give the data .*--data-root DIR or --ann-file '
                                      r'FILE\n', err), err


@pytest.mark.slow
def test_browse_dataset_draws_coco_data(three_classes, tmp_path):
    import browse_dataset
    out = run_tool('browse_dataset.py', DET, '--data-root', three_classes, '--num', '2',
                   '--out-dir', str(tmp_path / 'browse'), check=True).stdout
    assert re.search(r'^2 of 8 images drawn \(ground truth after the train pipeline\)', out,
                     re.M), out
    assert len(os.listdir(tmp_path / 'browse')) == 2
    # the explicit form: an annotation file and its image folder
    browse_dataset.main([DET, '--coco', os.path.join(three_classes, 'annotations',
                                                     'instances_validation.json'),
                         os.path.join(three_classes, 'validation'), '--num', '1',
                         '--out-dir', str(tmp_path / 'explicit')])
    assert len(os.listdir(tmp_path / 'explicit')) == 1


@pytest.fixture(scope='module')
def renamed(three_classes, module_tmp):
    """The 3-class set in another layout: labels/train.json, labels/val.json, images in pics/."""
    root = module_tmp('renamed')
    os.makedirs(root / 'labels')
    for split, name in (('training', 'train'), ('validation', 'val')):
        shutil.copy(os.path.join(three_classes, 'annotations', f'instances_{split}.json'),
                    root / 'labels' / f'{name}.json')
        os.symlink(os.path.realpath(os.path.join(three_classes, split)), root / f'pics-{name}')
    return str(root)


def built_datasets(cfg):
    """Every labeled dataset the config trains and validates on, built as the runner builds
    them (of a semi-supervised config's labeled + unlabeled concatenation, the labeled part)."""
    import custom_modules  # noqa: F401  (the datasets' registration, as custom_imports does)
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        built = {name: DATASETS.build(cfg[name].dataset)
                 for name in ('train_dataloader', 'val_dataloader') if cfg.get(name)}
    return {name: ds.datasets[0] if hasattr(ds, 'datasets') else ds for name, ds in built.items()}


def bbox_heads(cfg):
    heads = cfg.model.get('detector', cfg.model).roi_head.bbox_head
    return heads if isinstance(heads, (list, tuple)) else [heads]


@pytest.mark.parametrize('path', DET_CONFIGS, ids=os.path.basename)
def test_every_detection_config_takes_coco_data_unedited(path, three_classes, tmp_path):
    """What tools/train.py builds from --data-root: COCO datasets with the file's 3 classes, a
    detector with 3 classes, every image kept (check_dataset.py says the configs keep images
    without annotations as negatives). Nothing is trained or loaded."""
    from train import build_cfg, parse_args
    unlabeled = ['--unlabeled', os.path.join(three_classes, 'training')] if 'soft' in path else []
    cfg, _ = build_cfg(parse_args([path, '--data-root', three_classes, '--check-inputs-only',
                                   '--work-dir', str(tmp_path), *unlabeled]))
    assert [h.num_classes for h in bbox_heads(cfg)] == [3] * len(bbox_heads(cfg))
    datasets = built_datasets(cfg)
    assert 'val_dataloader' in datasets or 'demo' in path or 'labeled-val' in path
    for name, ds in datasets.items():
        assert type(ds).__name__ == 'CocoFormatDataset', name
        assert ds.metainfo['classes'] == NAMES
        split = 'training' if name == 'train_dataloader' else 'validation'
        with open(os.path.join(three_classes, 'annotations', f'instances_{split}.json')) as f:
            assert len(ds) == len(json.load(f)['images']), name


def test_train_py_explicit_coco_files(renamed, tmp_path, capsys):
    import train as train_tool
    from train import build_cfg, parse_args
    files = {n: (os.path.join(renamed, 'labels', f'{n}.json'), os.path.join(renamed, f'pics-{n}'))
             for n in ('train', 'val')}
    cfg, _ = build_cfg(parse_args([STEP, '--coco-train', *files['train'], '--coco-val',
                                   *files['val'], '--check-inputs-only', '--work-dir',
                                   str(tmp_path)]))
    assert [h.num_classes for h in bbox_heads(cfg)] == [3]
    for name, ds in built_datasets(cfg).items():
        ann, images = files['train' if name == 'train_dataloader' else 'val']
        assert (ds.ann_file, ds.data_prefix['img']) == (ann, images + '/')
        assert ds.metainfo['classes'] == NAMES
        paths = [ds.get_data_info(i)['img_path'] for i in range(len(ds))]
        assert paths and all(p.startswith(images + '/') for p in paths)
    # a demo config validates nothing during training: --coco-val is refused by name
    err, code = tool_error(capsys, train_tool, [DET, '--coco-train', *files['train'],
                                                '--coco-val', *files['val'],
                                                '--work-dir', str(tmp_path / 'demo')])
    assert code == 2 and re.fullmatch(
        r'error: \S+demo-4e_synthetic\.py has no val_dataloader \(it does not validate during '
        r'training; evaluate with tools/test.py --coco ANN IMAGES\): .*\n', err), err
    assert not os.path.exists(tmp_path / 'demo')


@pytest.mark.parametrize('drop', [True, False])
def test_images_without_annotations_follow_filter_empty_gt(three_classes, tmp_path, drop):
    from mmengine.registry import DefaultScope

    from custom_modules.datasets.coco_det import CocoFormatDataset
    data = json.load(open(os.path.join(three_classes, 'annotations', 'instances_training.json')))
    empty = data['images'][0]['id']
    data['annotations'] = [a for a in data['annotations'] if a['image_id'] != empty]
    ann = tmp_path / 'train.json'
    json.dump(data, open(ann, 'w'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = CocoFormatDataset(ann_file=str(ann), data_prefix=dict(img=three_classes + '/training/'),
                               filter_cfg=dict(filter_empty_gt=drop))
    ids = [ds.get_data_info(i)['img_id'] for i in range(len(ds))]
    with_boxes = {a['image_id'] for a in data['annotations']}
    assert ids == [im['id'] for im in data['images'] if not drop or im['id'] in with_boxes]
    assert (empty in ids) is not drop


@pytest.fixture(scope='module')
def det_checkpoint(module_tmp):
    """A file test.py takes as a detector checkpoint (its keys): enough for the checks before
    the model is built."""
    path = module_tmp('ckpt') / 'detector.pth'
    torch.save(dict(state_dict={'roi_head.bbox_head.fc_cls.weight': torch.zeros(4, 1)},
                    meta=dict(dataset_meta=dict(classes=NAMES))), path)
    return str(path)


MORE = r'(?: \(\d+ more problems: tools/check_dataset\.py lists them\))?'


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
def test_bad_coco_input_stops_train_and_test_with_one_line(three_classes, det_checkpoint,
                                                           tmp_path, capsys, case, edit, message):
    import test as test_tool
    import train as train_tool
    root = tmp_path / 'bad'
    shutil.copytree(three_classes, root, symlinks=True)
    ann = root / 'annotations' / 'instances_training.json'
    if edit is None:
        ann.write_text(ann.read_text()[:-20])
    else:
        data = json.load(open(ann))
        edit(data)
        json.dump(data, open(ann, 'w'))
    work = tmp_path / 'w'
    if case == 'malformed':  # once the whole tool, as a user runs it
        r = run_tool('train.py', DET, '--data-root', str(root), '--work-dir', str(work))
        assert r.returncode == 2 and r.stdout == ''
        assert re.fullmatch(f'error: \\S+{message}{MORE}\n', r.stderr), r.stderr
    for module, argv in ((train_tool, [DET, '--data-root', str(root), '--work-dir', str(work)]),
                         (test_tool, [DET, det_checkpoint, '--coco', str(ann),
                                      str(root / 'training'), '--work-dir', str(work)])):
        err, code = tool_error(capsys, module, argv)
        assert code == 2 and re.fullmatch(f'error: \\S+{message}{MORE}\n', err), (module, err)
    assert not os.path.exists(work)  # nothing written before the check


@pytest.mark.slow
def test_check_dataset_lists_every_coco_problem(three_classes, tmp_path, capsys):
    import check_dataset
    root = tmp_path / 'bad'
    shutil.copytree(three_classes, root, symlinks=True)
    # images of its own (the others stay links into the shared set), one of them not an image
    os.unlink(root / 'validation')
    shutil.copytree(os.path.join(three_classes, 'validation'), root / 'validation', symlinks=True)
    ann = root / 'annotations' / 'instances_validation.json'
    data = json.load(open(ann))
    first, second, third = data['images'][:3]
    os.unlink(root / 'validation' / third['file_name'])
    (root / 'validation' / third['file_name']).write_bytes(b'not a JPEG')
    data['images'].append(dict(first))  # duplicate image id
    data['images'].append(dict(id=123456, file_name='gone.JPEG', width=10, height=10))
    data['categories'].append(dict(id=5, name='teapot'))  # no box has it
    data['annotations'] += [
        dict(id=900001, image_id=first['id'], category_id=7, bbox=[5, 5, 0, 10], area=0),
        dict(id=900002, image_id=second['id'], category_id=7,
             bbox=[second['width'] - 5, 2, 40, 10], area=400),
        dict(id=900003, image_id=second['id'], category_id=3, bbox=[1, 1, 5, 5], area=25)]
    json.dump(data, open(ann, 'w'))
    for argv in ([str(root), '--split', 'validation'],
                 ['--coco', str(ann), str(root / 'validation')]):
        capsys.readouterr()
        assert check_dataset.main(argv) == 1
        out = capsys.readouterr().out
        for kind in ('duplicate id or name', 'missing image file', 'box with non-positive size',
                     'box outside the image', 'unknown category id', 'unreadable image'):
            assert re.search(rf'^ERROR: 1 x {kind}$', out, re.M), (kind, out)
        assert re.search(rf'^    \S+: cannot read image', out, re.M), out
        assert re.search(r'^images without annotations: [1-9]\d* \(kept as negatives: the '
                         r'detection configs train with filter_cfg=dict\(filter_empty_gt=False\)',
                         out, re.M), out
        assert re.search(r'^categories without any box \(\d+\): (.*, )?teapot \(id 5\)', out,
                         re.M), out
        assert 'FAILED: 6 errors' in out
    ok = run_tool('check_dataset.py', three_classes, check=True)
    assert ok.stdout.rstrip().endswith('OK') and ok.stdout.count('== ') == 2


@pytest.mark.slow
def test_slurm_chain_check_follows_the_split_names(tmp_path):
    """tools/slurm/submit_pipeline.sh's check of LABELED= before submitting: COCO files named
    otherwise than the configs' splits are one line saying which file it reads, which the folder
    has and how to name other splits; named through DET_ARGS, those files are the ones checked."""
    labeled = tmp_path / 'labeled'
    os.makedirs(labeled / 'annotations')
    for name in ('train', 'val'):
        (labeled / 'annotations' / f'instances_{name}.json').write_text('{}')
    moco = tmp_path / 'moco.pth'
    moco.write_bytes(b'x')

    def submit(**env):
        return run_tool('slurm/submit_pipeline.sh', cwd=tmp_path,
                        env=dict(PATH=os.environ['PATH'], LABELED=str(labeled), MOCO=str(moco),
                                 **env))
    r = submit()
    assert r.returncode == 2 and re.fullmatch(
        r'error: LABELED=\S+: \S+/annotations/instances_training\.json: no such file '
        r'\(annotations/ has: instances_train\.json instances_val\.json\); for other split '
        r'names add DET_ARGS="--cfg-options train_dataloader\.dataset\.split=NAME '
        r'val_dataloader\.dataset\.split=NAME" TEST_ARGS="--split NAME" \(full report: .*\)\n',
        r.stderr), r.stderr
    r = submit(DET_ARGS='--cfg-options train_dataloader.dataset.split=train '
                        'val_dataloader.dataset.split=val')
    # the named files are read now (and these hold no COCO data)
    assert r.returncode == 2 and 'instances_train.json' in r.stderr, r.stderr
    assert 'no such file' not in r.stderr and 'instances_training' not in r.stderr, r.stderr
