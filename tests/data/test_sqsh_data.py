"""Datasets read straight out of squashfs images, through the tools a user runs: training from
``unlabeled.sqsh`` equals training from the unpacked folder, the labeled layout inside an image
indexes as the folder does, check_dataset.py reads images, bad images stop the tools with one
``error:`` line before training, a damaged file inside a good image is skipped like an unreadable
PNG, and submit_pipeline.sh takes ``UNLABELED=...sqsh``."""
import hashlib
import logging
import os
import shutil
import uuid

import pytest
import torch

from squashfs_tools import mksquashfs, mksquashfs_unavailable
from helpers import REPO, counted_python, run_tool

MOCO_DEMO = 'configs/mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py'
SCRATCH_DEMO = 'configs/faster_rcnn/faster-rcnn_r50-scratch_fpn_1xb4-demo-4e_synthetic.py'
SUBMIT = os.path.join(REPO, 'tools', 'slurm', 'submit_pipeline.sh')


_why = mksquashfs_unavailable()
pytestmark = pytest.mark.skipif(_why is not None, reason=f'squashfs tests skipped: {_why}')


@pytest.fixture(scope='module', autouse=True)
def own_cache(module_tmp):
    """The image indexes (and labeled indexes) of these throw-away images go to a temporary
    cache, in this process and the tools it starts, not into the user's ~/.cache."""
    old = os.environ.get('XDG_CACHE_HOME')
    os.environ['XDG_CACHE_HOME'] = str(module_tmp('cache'))
    yield
    if old is None:
        del os.environ['XDG_CACHE_HOME']
    else:
        os.environ['XDG_CACHE_HOME'] = old


@pytest.fixture(scope='module')
def data(module_tmp):
    """The same generated images twice: one data folder with unlabeled.sqsh (as
    make_synthetic_data.py --sqsh writes it), one unpacked; and the labeled set packed too."""
    root = module_tmp('sqsh-data')
    args = ['--seed', '0', '--num-unlabeled', '16', '--num-train', '4', '--num-val', '3',
            '--unlabeled-size', '96']
    for name, extra in (('packed', ['--sqsh']), ('folder', [])):
        r = run_tool('make_synthetic_data.py', '--out', str(root / name), *args, *extra)
        assert r.returncode == 0, r.stderr
    assert not (root / 'packed' / 'unlabeled').exists()
    labeled = mksquashfs(str(root / 'folder' / 'labeled'), str(root / 'labeled.sqsh'))
    return dict(root=root, image=str(root / 'packed' / 'unlabeled.sqsh'),
                folder=str(root / 'folder' / 'unlabeled'), labeled=labeled,
                labeled_folder=str(root / 'folder' / 'labeled'))


def test_make_synthetic_data_packs_the_same_pngs(data):
    from custom_modules.fileio.squashfs import open_image
    image = open_image(data['image'])
    names = sorted(os.listdir(data['folder']))
    assert image.files('') == [f'unlabeled/{n}' for n in names]  # the course's layout
    for n in names:
        with open(os.path.join(data['folder'], n), 'rb') as f:
            assert image.read(f'unlabeled/{n}') == f.read(), n


def _train(work, data_root):
    r = run_tool('train.py', MOCO_DEMO, '--data-root', data_root, '--work-dir', str(work),
                 '--cfg-options', 'train_cfg.max_epochs=1', 'train_dataloader.batch_size=4')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    with open(work / 'last_checkpoint') as f:
        return torch.load(f.read().strip(), map_location='cpu', weights_only=False)


@pytest.mark.slow
def test_training_from_the_image_equals_training_from_the_folder(data, tmp_path):
    # same files, same order, same seeds, two loader workers: the same weights bit for bit
    from_image = _train(tmp_path / 'image', data['image'])
    from_folder = _train(tmp_path / 'folder', data['folder'])
    assert from_image['meta']['iter'] == from_folder['meta']['iter'] == 4
    a, b = from_image['state_dict'], from_folder['state_dict']
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    # the run record names the image by path, size and superblock digest
    import json
    with open(tmp_path / 'image' / 'run_inputs.json') as f:
        inputs = json.load(f)['inputs']
    uri = 'sqsh://' + os.path.abspath(data['image'])
    assert inputs['train_dataloader.dataset.data_root'] == uri
    size = os.path.getsize(data['image'])
    assert inputs['train_dataloader.dataset.data_root (image)'].startswith(f'{size} bytes, ')


def test_a_folder_inside_the_image_is_a_data_root(data):
    from mmengine.config import Config

    from toolkit.config_edits import set_data_root
    cfg = Config.fromfile(os.path.join(REPO, MOCO_DEMO))
    set_data_root(cfg, data['image'] + '/unlabeled/')
    uri = 'sqsh://' + os.path.abspath(data['image']) + '/unlabeled'
    assert cfg.train_dataloader.dataset.data_root == uri == cfg.data_root


def _records(root):
    from custom_modules.datasets.labeled_index import load_split
    records, report = load_split(root, 'training', use_cache=False)
    return [(r.img_id, os.path.basename(r.img_path), r.width, r.height, r.bboxes.tolist(),
             r.labels.tolist()) for r in records], report


def test_labeled_layout_inside_an_image_indexes_as_the_folder(data, cache_dir):
    from mmengine import fileio

    from custom_modules.datasets.labeled_index import load_split
    from custom_modules.fileio.sqsh_backend import resolve_data_root
    uri = resolve_data_root(data['labeled'])
    packed, report = _records(uri)
    unpacked, _ = _records(data['labeled_folder'])
    assert packed == unpacked and len(packed) == 4
    assert report.split_dir == uri + '/training'
    # every image a record names is the folder's file, byte for byte
    records, _ = load_split(uri, 'training', use_cache=False)
    for r in records:
        rel = r.img_path[len(uri) + 1:]
        with open(os.path.join(data['labeled_folder'], rel), 'rb') as f:
            assert fileio.get(r.img_path) == f.read()
    # cached like the folder's index, keyed by the image
    first = load_split(uri, 'training', cache_dir=cache_dir)[1]
    again = load_split(uri, 'training', cache_dir=cache_dir)[1]
    assert not first.from_cache and again.from_cache


@pytest.mark.slow
def test_test_py_evaluates_a_folder_inside_the_image_as_the_folder(data, tmp_path):
    """tools/test.py --data-root IMAGE.sqsh/labeled (a folder inside the image): the same 12
    summary lines as on the unpacked folder. A fixed untrained detector with every box kept is
    enough: the same images must give the same detections."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    config = os.path.join(REPO, 'configs', 'faster_rcnn',
                          'faster-rcnn_r50-scratch_fpn_1xb4-demo-4e_synthetic.py')
    init_default_scope('mmdet')
    torch.manual_seed(0)
    ckpt = str(tmp_path / 'det.pth')
    torch.save(dict(meta=dict(epoch=1), state_dict=MODELS.build(
        Config.fromfile(config).model).state_dict()), ckpt)
    image = mksquashfs(data['labeled_folder'], str(tmp_path / 'data.sqsh'), '-keep-as-directory')
    summaries = []
    for root in (image + '/labeled', data['labeled_folder']):
        r = run_tool('test.py', config, ckpt, '--data-root', root, '--work-dir',
                     str(tmp_path / 'w'), '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0')
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        summaries.append([line for line in (r.stdout + r.stderr).splitlines()
                          if line.startswith(' Average ')])
    assert len(summaries[0]) == 12 and summaries[0] == summaries[1], summaries


def _report_lines(out, root):
    return [line.replace(root, 'ROOT') for line in out.splitlines()]


@pytest.mark.slow
def test_check_dataset_reads_images(data):
    r = run_tool('check_dataset.py', data['image'], '--decode')
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'images: 16' in r.stdout and 'sizes: 96x96: 16' in r.stdout
    assert r.stdout.splitlines()[-1] == 'OK'
    r = run_tool('check_dataset.py', data['image'], '--quick')
    assert r.returncode == 0 and '16 files read' in r.stdout, r.stdout + r.stderr
    # the labeled image: the same report as the unpacked folder, paths aside
    packed = run_tool('check_dataset.py', data['labeled'])
    folder = run_tool('check_dataset.py', data['labeled_folder'])
    assert packed.returncode == folder.returncode == 0, packed.stdout + packed.stderr
    uri = 'sqsh://' + os.path.abspath(data['labeled'])
    assert _report_lines(packed.stdout, uri) == _report_lines(folder.stdout,
                                                              data['labeled_folder'])


@pytest.fixture(scope='module')
def bad_images(data, module_tmp):
    tmp = module_tmp('bad-sqsh')
    with open(data['image'], 'rb') as f:
        whole = f.read()
    truncated = tmp / 'truncated.sqsh'
    truncated.write_bytes(whole[:len(whole) // 2])
    not_sqsh = tmp / 'zip.sqsh'
    not_sqsh.write_bytes(b'PK\x03\x04' + bytes(200))
    (tmp / 'empty').mkdir()
    empty = mksquashfs(str(tmp / 'empty'), str(tmp / 'empty.sqsh'))
    return dict(truncated=str(truncated), not_sqsh=str(not_sqsh), empty=empty,
                outside=data['image'] + '/no/such/folder')


@pytest.mark.parametrize('case,words', [
    ('truncated', ['truncated']), ('not_sqsh', ['not a squashfs image']),
    ('empty', ['has no file']), ('outside', ["'no/such/folder'", 'not in the image'])])
def test_a_bad_image_stops_train_py_with_one_error_line(bad_images, tmp_path, case, words):
    path = bad_images[case]
    r = run_tool('train.py', MOCO_DEMO, '--data-root', path, '--work-dir', str(tmp_path / 'w'))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith('error: ') and path.split('.sqsh')[0] in lines[0], lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp_path / 'w').exists()  # stopped before anything was set up


def test_coco_data_inside_an_image_is_refused_with_one_line(tmp_path):
    """COCO-format data is read from folders only: packed into an image it is one error line
    saying so, not a course-layout read that fails on missing labels."""
    src = tmp_path / 'coco'
    (src / 'annotations').mkdir(parents=True)
    (src / 'annotations' / 'instances_training.json').write_text('{}')
    (src / 'training').mkdir()
    image = mksquashfs(str(src), str(tmp_path / 'coco.sqsh'))
    r = run_tool('train.py', 'configs/' + DETECTION_CONFIGS[0], '--data-root', image,
                 '--work-dir', str(tmp_path / 'w'), '--pretrained', 'unused.pth')
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert lines[0] == (f'error: --data-root {image}: COCO-format data is read from a folder, '
                        f'not from inside a squashfs image: unpack it (unsquashfs -d DIR IMAGE)')


@pytest.mark.slow
def test_check_dataset_refuses_a_bad_image(bad_images):
    r = run_tool('check_dataset.py', bad_images['truncated'])
    assert r.returncode == 2 and r.stderr.startswith('error: ') and 'truncated' in r.stderr


def _damaged_image(tmp_path, how):
    """An image of 4 PNGs whose 2.PNG is damaged: ``stored``, its raw bytes in an uncompressed
    image zeroed (the PNG decoder fails); ``gzip``, its compressed data block's header zeroed
    (the block fails to decompress)."""
    from PIL import Image

    from custom_modules.fileio import squashfs
    src = tmp_path / 'src'
    src.mkdir()
    if how == 'stored':
        for i in range(4):
            Image.effect_noise((64, 64), 40 + i).convert('RGB').save(src / f'{i}.PNG')
        # uncompressed data and no fragments: each file's bytes lie in the image as they are
        image = mksquashfs(str(src), str(tmp_path / 'u.sqsh'), '-noD', '-no-fragments')
        blob = bytearray(open(image, 'rb').read())
        at = blob.find((src / '2.PNG').read_bytes())
        assert at > 0
        blob[at + 100:at + 400] = bytes(300)
    else:
        for i in range(4):  # unpacked PNG data: gzip shrinks it, so it is stored compressed
            Image.new('RGB', (64, 64), (60 * i, 20, 30)).save(src / f'{i}.PNG', compress_level=0)
        image = mksquashfs(str(src), str(tmp_path / 'u.sqsh'), '-no-fragments')
        reader = squashfs.SquashfsImage(image, str(tmp_path / 'index'))
        i = reader._file('2.PNG')
        block = int(reader._blocks[int(reader._blk[i])])
        assert reader.compression == 'gzip' and not block & squashfs._BLOCK_UNCOMPRESSED
        at = int(reader._a[i])
        reader.close()
        blob = bytearray(open(image, 'rb').read())
        blob[at:at + 2] = bytes(2)  # zlib's header: 'incorrect header check'
    open(image, 'wb').write(bytes(blob))
    return image


def _image_dataset(image, **kwargs):
    """The MoCo demo config's dataset (UnlabeledImageFolder) on ``image``."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from custom_modules.fileio.sqsh_backend import resolve_data_root
    from mmpretrain.registry import DATASETS
    cfg = Config.fromfile(os.path.join(REPO, MOCO_DEMO))
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.update(data_root=resolve_data_root(image), **kwargs)
    init_default_scope('mmpretrain')
    return DATASETS.build(ds_cfg)


@pytest.mark.parametrize('how', ['stored', 'gzip'])
def test_a_damaged_file_inside_the_image_is_skipped_and_counted(tmp_path, how):
    """A damaged file inside a good image, whether its bytes decode to garbage or its data block
    does not decompress: UnlabeledImageFolder names it in the log, trains on another image in
    its place and counts it; one more than max_unreadable stops training, naming it."""
    from mmengine.logging import MMLogger

    from custom_modules.datasets.unreadable import UnreadableImagesError
    image = _damaged_image(tmp_path, how)
    MMLogger.get_instance(f'sqsh-{uuid.uuid4().hex}', log_level='WARNING')
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    MMLogger.get_current_instance().addHandler(handler)
    ds = _image_dataset(image)
    names = [os.path.basename(ds.get_data_info(i)['img_path']) for i in range(len(ds))]
    item = ds[names.index('2.PNG')]
    assert len(item['inputs']) == 2  # another image took its place
    assert ds.unreadable.num_files == 1
    assert [f.endswith('u.sqsh/2.PNG') for f in ds.unreadable_files()] == [True]
    [message] = [m for m in messages if 'unreadable image sqsh://' in m]
    assert '2.PNG' in message, messages
    if how == 'gzip':
        assert 'does not decompress (gzip' in message, message
    ds = _image_dataset(image, max_unreadable=0)
    with pytest.raises(UnreadableImagesError, match=r'^1 unreadable images .*u\.sqsh/2\.PNG'):
        ds[names.index('2.PNG')]


def _fake_sbatch(tmp):
    bin_dir = tmp / 'bin'
    bin_dir.mkdir(exist_ok=True)
    log = tmp / 'calls.log'
    sbatch = bin_dir / 'sbatch'
    sbatch.write_text(f'#!/usr/bin/env bash\necho "sbatch $*" >> {log}\n'
                      f'echo $((1000 + $(wc -l < {log})))\n')
    sbatch.chmod(0o755)
    return bin_dir, log


@pytest.mark.slow
def test_submit_pipeline_takes_unlabeled_and_labeled_images(data, bad_images, tmp_path):
    bin_dir, log = _fake_sbatch(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ('MOCO', 'LABELED', 'UNLABELED')}
    starts = tmp_path / 'python-starts.log'
    env.update(PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}',
               PYTHON=counted_python(bin_dir / 'counted-python', starts))
    work = tmp_path / 'submit'
    work.mkdir()

    def submit(**kw):
        return run_tool(SUBMIT, env=dict(env, **kw), cwd=work, timeout=300)
    r = submit(UNLABELED=data['image'], LABELED=data['labeled'])
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 5 and f'--data-root {data["image"]} ' in calls[0] + ' ', calls
    # the environment, LABELED and the UNLABELED image checked in one Python start
    starts = starts.read_text().splitlines()
    assert len(starts) == 1 and starts[0].count('check_dataset.py') == 2, starts
    log.unlink()
    r = submit(UNLABELED=bad_images['truncated'], LABELED=data['labeled'])
    assert r.returncode == 2 and not log.exists(), r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: UNLABELED={bad_images["truncated"]}')
    assert 'truncated' in lines[0]


def test_an_image_changed_under_a_work_folder_is_noticed(data, tmp_path):
    """The record identifies the image itself: another image at the same path (rebuilt, other
    files) is a changed input for --resume."""
    from toolkit.resume_policy import run_inputs
    from mmengine.config import Config

    from toolkit.config_edits import set_data_root
    image = tmp_path / 'u.sqsh'
    shutil.copy(data['image'], image)
    cfg = Config.fromfile(os.path.join(REPO, MOCO_DEMO))
    set_data_root(cfg, str(image))
    before = run_inputs(cfg)
    src = tmp_path / 'src'
    shutil.copytree(data['folder'], src)
    os.remove(src / '3.PNG')
    mksquashfs(str(src), str(image), '-keep-as-directory')
    after = run_inputs(cfg)
    key = 'train_dataloader.dataset.data_root (image)'
    assert before[key] != after[key]
    assert hashlib.sha256(open(image, 'rb').read(96)).hexdigest()[:16] in after[key]


PRETRAIN_CONFIGS = ['mocov2/mocov2_resnet50_4xb32-coslr-200e_unlabeled224.py',
                    'mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py',
                    'densecl/densecl_resnet50_4xb32-coslr-200e_unlabeled224.py',
                    'densecl/densecl_resnet50_1xb16-coslr-8e_synthetic96.py',
                    'mae/mae_vit-base-p16_4xb64-amp-coslr-80e_unlabeled224.py',
                    'mae/mae_vit-tiny-p16_1xb16-coslr-8e_synthetic96.py']
DETECTION_CONFIGS = ['faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_2xb2-s1-23e_labeled.py',
                     'faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_2xb8-ms-36e_labeled.py',
                     'vitdet/faster-rcnn_vit-b-mae-pre_sfp_1xb2-s1-frozen-20e_labeled512.py']


def _first_item(config, data_root, names):
    from mmengine.config import Config
    from mmengine.registry import DATASETS, init_default_scope

    from toolkit.config_edits import set_data_root
    from toolkit.checks import check_data_folders
    cfg = Config.fromfile(os.path.join(REPO, 'configs', config))
    set_data_root(cfg, data_root, names=names)
    check_data_folders(cfg, names=names)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    items = []
    for name in names:
        ds = DATASETS.build(cfg[name].dataset)
        items.append((len(ds), ds[0]))
    return items


@pytest.mark.parametrize('config', PRETRAIN_CONFIGS)
def test_every_pretraining_config_reads_the_image(data, config):
    [(n, item)] = _first_item(config, data['image'], ('train_dataloader', ))
    assert n == 16 and item['data_samples'].img_path.startswith('sqsh://')


@pytest.mark.parametrize('config', DETECTION_CONFIGS)
def test_every_detection_config_reads_the_labeled_image(data, config):
    (n_train, train), (n_val, val) = _first_item(config, data['labeled'],
                                                 ('train_dataloader', 'val_dataloader'))
    assert (n_train, n_val) == (4, 3)
    for item in (train, val):
        assert item['data_samples'].img_path.startswith('sqsh://') and item['inputs'].numel()


@pytest.mark.slow
def test_browse_dataset_draws_from_the_image(data, tmp_path):
    r = run_tool('browse_dataset.py', MOCO_DEMO, '--data-root', data['image'], '--num', '2',
                 '--out-dir', str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == ['0.png', '1.png']


@pytest.mark.slow
def test_a_symlink_in_the_labeled_image_is_one_error_line(data, tmp_path):
    """Links inside an image are not followed: a linked image in the labeled layout stops
    train.py with one line naming the entry, not a traceback from the index scan."""
    src = tmp_path / 'labeled'
    shutil.copytree(data['labeled_folder'], src)
    images = src / 'training' / 'images'
    first = sorted(os.listdir(images))[0]
    os.symlink(first, images / '99.JPEG')
    shutil.copy(src / 'training' / 'labels' / first.replace('.JPEG', '.yml'),
                src / 'training' / 'labels' / '99.yml')
    image = mksquashfs(str(src), str(tmp_path / 'labeled.sqsh'))
    r = run_tool('train.py', SCRATCH_DEMO, '--data-root', image,
                 '--work-dir', str(tmp_path / 'w'), '--cfg-options', 'train_cfg.max_epochs=1')
    errors = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-3000:]
    assert 'Traceback' not in r.stderr
    assert "'training/images/99.JPEG' is a symlink" in errors[0], errors[0]


@pytest.mark.parametrize('quick', [False, True])
def test_check_dataset_names_a_symlink_in_the_labeled_image_in_one_line(data, tmp_path, quick,
                                                                       capsys):
    """The pre-submit check (--quick) and the full check name a link inside the image in one
    ERROR line, without a traceback."""
    src = tmp_path / 'labeled'
    shutil.copytree(data['labeled_folder'], src)
    images = src / 'training' / 'images'
    first = sorted(os.listdir(images))[0]
    os.symlink(first, images / '0.JPEG')  # listed first: --quick reads it
    shutil.copy(src / 'training' / 'labels' / first.replace('.JPEG', '.yml'),
                src / 'training' / 'labels' / '0.yml')
    image = mksquashfs(str(src), str(tmp_path / 'labeled.sqsh'))
    import check_dataset
    capsys.readouterr()
    assert check_dataset.main([image, '--workers', '1', *(['--quick'] if quick else [])]) == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith('ERROR')]
    assert len(errors) == 1 and "'training/images/0.JPEG' is a symlink" in errors[0], out
    assert 'FAILED: 1 errors' in out


def test_labeled_index_reads_only_the_image_headers_inside_an_image(tmp_path, cache_dir,
                                                                    monkeypatch):
    """Indexing the labeled layout inside an image reads each JPEG's header (its first block),
    not the whole file: at most 2 blocks of 4 KiB per image, for images of 5-6 blocks; a header
    longer than the first read (a 20 KB EXIF block) is read further."""
    import numpy as np
    from PIL import Image

    from custom_modules.datasets.labeled_index import load_split
    from custom_modules.fileio import squashfs
    from helpers import write_sample
    for i in range(1, 9):
        write_sample(tmp_path / 'labeled', 'training', i, size=(200 + 8 * i, 150))
    sizes = [os.path.getsize(tmp_path / 'labeled' / 'training' / 'images' / f'{i}.JPEG')
             for i in range(1, 9)]
    assert min(sizes) > 4 * 4096  # noise: every image spans several blocks
    exif = Image.Exif()
    exif[0x010E] = 'a long description ' * 1000  # ImageDescription, before the SOF marker
    write_sample(tmp_path / 'labeled', 'training', 9, size=(300, 100))
    long_header = tmp_path / 'labeled' / 'training' / 'images' / '9.JPEG'
    Image.open(long_header).save(long_header, exif=exif)
    image = mksquashfs(str(tmp_path / 'labeled'), str(tmp_path / 'labeled.sqsh'), '-b', '4096')
    read = []
    pread = squashfs.SquashfsImage._pread

    def counted(self, size, offset, inner):
        if inner.endswith('.JPEG') and not inner.endswith('/9.JPEG'):
            read.append(size)
        return pread(self, size, offset, inner)

    monkeypatch.setattr(squashfs.SquashfsImage, '_pread', counted)
    records, _ = load_split('sqsh://' + image, 'training', use_cache=False, num_workers=1)
    folder, _ = load_split(str(tmp_path / 'labeled'), 'training', use_cache=False)
    assert [(r.width, r.height) for r in records] == [(r.width, r.height) for r in folder]
    assert (records[-1].width, records[-1].height) == (300, 100)
    assert sum(read) <= 8 * 2 * 4096, (sum(read), sum(sizes), np.mean(read))
