"""custom_modules.fileio.squashfs against Debian's mksquashfs: every file's bytes for every compression,
with and without fragments, the folder queries against os.walk, fork and spawn loader workers
sharing an image opened before they start, damaged images, the on-disk index cache, files past
4 GiB, and the system calls a read through the sqsh:// backend costs."""
import hashlib
import os
import pickle
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from custom_modules.fileio import squashfs
from custom_modules.fileio.squashfs import (SquashfsError, SquashfsImage, open_image,
                                            split_image_path)
from helpers import PY, REPO, run_tool
from squashfs_tools import (HashDataset, make_tree, mksquashfs, mksquashfs_unavailable,
                            tree_hashes)

_why = mksquashfs_unavailable()
needs_mksquashfs = pytest.mark.skipif(_why is not None, reason=str(_why))
# every compressor Debian's mksquashfs 4.5 offers
COMPRESSIONS = ('gzip', 'xz', 'lzo', 'lz4', 'zstd', 'lzma')
BLOCK = 4096


@pytest.fixture(scope='module')
def tree(module_tmp):
    return make_tree(str(module_tmp('src')), BLOCK)


@pytest.fixture(scope='module')
def want(tree):
    return tree_hashes(tree)


@pytest.fixture(scope='module')
def build(tree, module_tmp):
    """build(comp, *options) -> path of an image of the tree, made once per module."""
    out = module_tmp('images')
    made = {}

    def _build(comp='gzip', *options):
        key = (comp, *options)
        if key not in made:
            name = '-'.join(o.strip('-') for o in key) + '.sqsh'
            made[key] = mksquashfs(tree, str(out / name), '-comp', comp, '-b', str(BLOCK),
                                   *options)
        return made[key]
    return _build


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / 'index-cache')


def _copy(src: str, dst) -> str:
    shutil.copyfile(src, dst)
    return str(dst)


@needs_mksquashfs
@pytest.mark.parametrize('fragments', ['fragments', '-no-fragments', '-always-use-fragments'])
@pytest.mark.parametrize('comp', COMPRESSIONS)
def test_every_file_byte_equal(build, want, cache, comp, fragments):
    options = () if fragments == 'fragments' else (fragments,)
    image = SquashfsImage(build(comp, *options), cache)
    assert image.compression == comp and image.block_size == BLOCK
    files = image.files()
    assert files == sorted(want)
    assert image.num_files == len(want)
    got = {p: hashlib.sha256(image.read(p)).hexdigest() for p in files}
    assert got == want
    # the cases are really in the image: sparse blocks, extended file and folder inodes,
    # files of several blocks, and fragment tails unless -no-fragments
    types = image._types.tolist()
    assert types[8] >= 1 and types[9] >= 1, types  # extended folder / file inodes
    assert (image._blocks == 0).any()  # sparse block
    is_file = image._kind == squashfs.FILE
    with_fragment = is_file & (image._frag_idx != 0xFFFFFFFF)
    assert (image._b[is_file] > 2 * BLOCK).sum() >= 3
    tails = with_fragment & (image._b > BLOCK)  # blocks + a fragment tail
    if fragments == '-no-fragments':
        assert not with_fragment.any()
    elif fragments == 'fragments':  # mksquashfs's default: only files under a block
        assert with_fragment.sum() > 40 and not tails.any()
    else:
        assert tails.sum() >= 5


@needs_mksquashfs
@pytest.mark.parametrize('fragments', ['fragments', '-no-fragments', '-always-use-fragments'])
def test_read_head_is_the_start_of_the_file(build, tree, cache, fragments):
    options = () if fragments == 'fragments' else (fragments,)
    image = SquashfsImage(build('gzip', *options), cache)
    for p in image.files():
        whole = image.read(p)
        for size in (1, 100, BLOCK, BLOCK + 1, 3 * BLOCK + 7):
            head = image.read_head(p, size)
            assert whole.startswith(head) and len(head) >= min(size, len(whole)), (p, size)


@needs_mksquashfs
def test_folder_queries_match_os_walk(build, tree, cache):
    image = SquashfsImage(build('gzip'), cache)
    for here, dirs, names in os.walk(tree):
        rel = os.path.relpath(here, tree).replace(os.sep, '/')
        rel = '' if rel == '.' else rel
        assert image.isdir(rel) and image.exists(rel) and not image.isfile(rel)
        expected = sorted([(d, True) for d in dirs] + [(n, False) for n in names])
        assert image.listdir(rel) == expected
        expected_files = sorted(
            os.path.relpath(os.path.join(h, n), tree).replace(os.sep, '/')
            for h, _, ns in os.walk(here) for n in ns
            if not os.path.islink(os.path.join(h, n)))
        assert image.files(rel) == expected_files
        for n in names:
            inner = f'{rel}/{n}' if rel else n
            path = os.path.join(here, n)
            assert image.exists(inner) and not image.isdir(inner)
            if os.path.islink(path):  # a symlink is listed, but it is no regular file
                assert not image.isfile(inner)
                continue
            assert image.isfile(inner)
            assert image.size(inner) == os.path.getsize(path)
    # the same paths written other ways
    assert image.isdir('/a/b/') and image.isfile('./a//text.txt') and image.isdir('.')
    assert image.listdir() == image.listdir('/')
    for missing in ('nope', 'a/nope', 'a/text.txt/x', 'tiny.txt/x', 'names/été.tx'):
        assert not image.exists(missing) and not image.isfile(missing)
        assert not image.isdir(missing)
    assert image.files('empty_dir') == [] and image.listdir('empty_dir') == []


@needs_mksquashfs
def test_missing_inner_path(build, cache):
    image = SquashfsImage(build('gzip'), cache)
    with pytest.raises(FileNotFoundError, match=r"gzip.sqsh: no 'a/nope.png'"):
        image.read('a/nope.png')
    with pytest.raises(FileNotFoundError):
        image.size('nope')
    with pytest.raises(FileNotFoundError):
        image.listdir('nope')
    with pytest.raises(IsADirectoryError):
        image.read('a')
    with pytest.raises(NotADirectoryError):
        image.listdir('tiny.txt')


def _load_all(image, paths, context):
    import torch.utils.data as tud
    loader = tud.DataLoader(HashDataset(image, paths), batch_size=None, num_workers=2,
                            multiprocessing_context=context)
    return list(loader)


@pytest.mark.slow
@needs_mksquashfs
@pytest.mark.parametrize('context', ['fork', 'spawn'])
def test_loader_workers_share_an_image_opened_before(build, want, cache, context):
    image = open_image(build('gzip', '-no-fragments'), cache)
    paths = image.files()
    image.read(paths[0])  # the descriptor is in use before the workers start
    assert len(pickle.dumps(image)) < 1000  # the index travels as its cache file, not pickled
    rows = _load_all(image, paths * 4, context)
    assert len(rows) == 4 * len(paths)
    assert all(want[p] == h for p, h, *_ in rows)
    pids = {row[2] for row in rows}
    assert len(pids) == 2 and os.getpid() not in pids
    if context == 'spawn':  # a spawned worker maps the cached index, it does not build one
        assert all(from_cache and builds == 0 for *_, from_cache, builds in rows)
    # the parent still reads correctly after its workers
    assert hashlib.sha256(image.read(paths[-1])).hexdigest() == want[paths[-1]]


@needs_mksquashfs
def test_not_squashfs_truncated_and_unsupported(build, tmp_path, cache, monkeypatch):
    other = tmp_path / 'notes.sqsh'
    other.write_bytes(b'this is not an image' * 10)
    with pytest.raises(SquashfsError, match=r'notes.sqsh: not a squashfs image'):
        SquashfsImage(str(other), cache)
    with pytest.raises(SquashfsError, match=r'missing.sqsh: squashfs image does not exist'):
        SquashfsImage(str(tmp_path / 'missing.sqsh'), cache)

    old = _copy(build('gzip'), tmp_path / 'old.sqsh')
    with open(old, 'r+b') as f:
        f.seek(28)
        f.write((3).to_bytes(2, 'little'))
    with pytest.raises(SquashfsError, match=r'old.sqsh: not a squashfs image of version 4.0 '
                                            r'\(it has version 3.0\)'):
        SquashfsImage(old, cache)

    cut = _copy(build('gzip'), tmp_path / 'cut.sqsh')
    size = os.path.getsize(cut)
    os.truncate(cut, size // 2)
    with pytest.raises(SquashfsError, match=rf'cut.sqsh: truncated squashfs image: '
                                            rf'{size // 2} of \d+ bytes'):
        SquashfsImage(cut, cache)

    # a compression id no squashfs writer uses
    odd = _copy(build('gzip'), tmp_path / 'odd.sqsh')
    with open(odd, 'r+b') as f:
        f.seek(20)
        f.write((9).to_bytes(2, 'little'))
    with pytest.raises(SquashfsError) as e:
        SquashfsImage(odd, cache)
    assert 'odd.sqsh: unknown squashfs compression id 9' in str(e.value)
    assert 'mksquashfs unpacked new.sqsh -comp gzip' in str(e.value)

    # a compression whose package is not installed: one line naming it and the repack command
    monkeypatch.setitem(sys.modules, 'lzallright', None)
    with pytest.raises(SquashfsError) as e:
        SquashfsImage(build('lzo'), cache)
    msg = str(e.value)
    assert '\n' not in msg and 'lzo.sqsh: compressed with lzo' in msg and 'lzallright' in msg
    assert f'unsquashfs -d unpacked {build("lzo")} && mksquashfs unpacked new.sqsh -comp gzip' \
        in msg


def _offset_of(image, inner):
    """(disk offset, on-disk size, compressed) of the first data block of ``inner``."""
    i = image._find(inner)
    size = int(image._blocks[int(image._blk[i])])
    return int(image._a[i]), size & 0xFFFFFF, not size & (1 << 24)


@needs_mksquashfs
def test_damaged_data_block_names_the_image(build, want, tmp_path, cache):
    bad = _copy(build('gzip', '-no-fragments'), tmp_path / 'bad.sqsh')
    image = SquashfsImage(bad, cache)
    offset, size, compressed = _offset_of(image, 'a/text.txt')
    assert compressed  # text compresses: mksquashfs stores the block compressed
    with open(bad, 'r+b') as f:
        f.seek(offset + size // 2)
        f.write(b'\xff' * 16)
    image = SquashfsImage(bad, cache)
    with pytest.raises(SquashfsError, match=r"bad.sqsh: damaged squashfs image: 'a/text.txt' "
                                            r'has a block at offset \d+ that does not decompress'):
        image.read('a/text.txt')
    assert hashlib.sha256(image.read('a/random.bin')).hexdigest() == want['a/random.bin']

    # damaged metadata (the inode table): found when the image is opened
    meta = _copy(build('gzip'), tmp_path / 'meta.sqsh')
    start = int.from_bytes(open(meta, 'rb').read(96)[64:72], 'little')  # inode_table_start
    with open(meta, 'r+b') as f:
        f.seek(start + 40)
        f.write(b'\x00\x13' * 32)
    with pytest.raises(SquashfsError, match=r'meta.sqsh: damaged squashfs image'):
        SquashfsImage(meta, cache)


@needs_mksquashfs
def test_index_cache_reused_then_rebuilt_after_a_change(build, tree, tmp_path, cache):
    path = _copy(build('gzip'), tmp_path / 'data.sqsh')
    builds = squashfs.build_count
    first = SquashfsImage(path, cache)
    assert squashfs.build_count == builds + 1 and not first.from_cache
    [cached] = [f for f in os.listdir(cache) if f.endswith('.npy')]  # no temporary file left
    cache_file = os.path.join(cache, cached)
    mtime = os.stat(cache_file).st_mtime_ns
    assert oct(stat.S_IMODE(os.stat(cache_file).st_mode)) == oct(0o666 & ~_umask())

    again = SquashfsImage(path, cache)
    assert again.from_cache and squashfs.build_count == builds + 1
    assert os.stat(cache_file).st_mtime_ns == mtime
    assert again.files() == first.files() and again.read('a/text.txt') == first.read('a/text.txt')

    # open_image: one object per process and image
    assert open_image(path, cache) is open_image(os.path.join(str(tmp_path), '.', 'data.sqsh'),
                                                 cache)

    # rewritten in place (another tree, another mtime): a new index, never the stale one
    with open(os.path.join(tree, 'tiny.txt'), 'rb') as f:
        old_tiny = f.read()
    changed = str(tmp_path / 'changed')
    shutil.copytree(tree, changed, symlinks=True)
    with open(os.path.join(changed, 'tiny.txt'), 'wb') as f:
        f.write(b'changed and longer')
    os.remove(os.path.join(changed, 'a', 'random.bin'))
    before = open_image(path, cache)
    mksquashfs(changed, path, '-b', str(BLOCK))
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    rebuilt = SquashfsImage(path, cache)
    assert squashfs.build_count == builds + 2 and not rebuilt.from_cache
    assert rebuilt.read('tiny.txt') == b'changed and longer' != old_tiny
    assert not rebuilt.exists('a/random.bin')
    # the old image's index is gone, the new one is there
    assert [f for f in os.listdir(cache) if f.endswith('.npy')] == [os.path.basename(
        rebuilt.cache_path)] != [cached]
    # this process never switches to the new file: open_image refuses until told to forget
    with pytest.raises(squashfs.ImageChangedError, match='changed on disk'):
        open_image(path, cache)
    squashfs.forget_image(path)
    reopened = open_image(path, cache)
    assert reopened is not before and reopened.read('tiny.txt') == b'changed and longer'
    # the object opened before the change refuses to read the new file in a new process
    with pytest.raises(SquashfsError, match='changed on disk'):
        pickle.loads(pickle.dumps(before))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@needs_mksquashfs
def test_unwritable_cache_still_reads(build, want, tmp_path, caplog):
    blocker = tmp_path / 'file'
    blocker.write_text('a file where the cache folder would be')
    image = SquashfsImage(build('zstd'), str(blocker / 'sub'))
    assert 'cannot cache the squashfs index' in caplog.text
    assert hashlib.sha256(image.read('a/text.txt')).hexdigest() == want['a/text.txt']


@needs_mksquashfs
@pytest.mark.parametrize('content', ['nothing', 'empty folders'])
def test_image_without_files_opens(tmp_path, cache, content):
    src = tmp_path / 'src'
    src.mkdir()
    if content == 'empty folders':
        (src / 'a' / 'b').mkdir(parents=True)
    image = SquashfsImage(mksquashfs(str(src), str(tmp_path / 'empty.sqsh')), cache)
    assert image.num_files == 0 and image.files() == [] and image.isdir('')
    assert image.listdir() == ([] if content == 'nothing' else [('a', True)])


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert squashfs.default_cache_dir() == os.path.join(str(tmp_path), 'sqsh-index')
    monkeypatch.delenv('XDG_CACHE_HOME')
    assert squashfs.default_cache_dir() == os.path.expanduser('~/.cache/sqsh-index')


def test_split_image_path(tmp_path, monkeypatch):
    sub = tmp_path / 'data' / 'sets'
    sub.mkdir(parents=True)
    img = sub / 'u.sqsh'
    img.write_bytes(b'not opened')
    img = str(img)
    assert split_image_path(img) == (img, '')
    assert split_image_path(img + '/') == (img, '')
    assert split_image_path('sqsh://' + img + '/unlabeled/0.png') == (img, 'unlabeled/0.png')
    assert split_image_path(img + '//unlabeled//x/./0.png/') == (img, 'unlabeled/x/0.png')
    assert split_image_path(str(sub)) is None  # a folder, no image on the way
    assert split_image_path(str(tmp_path / 'nope' / 'u.sqsh' / 'a')) is None
    assert split_image_path('') is None and split_image_path('sqsh://') is None
    monkeypatch.chdir(tmp_path)
    assert split_image_path('data/sets/u.sqsh/a/b') == ('data/sets/u.sqsh', 'a/b')
    assert split_image_path('sqsh://data/sets/u.sqsh') == ('data/sets/u.sqsh', '')



@needs_mksquashfs
def test_an_image_replaced_while_in_use_stops_reads(build, tmp_path, cache):
    """Another image moved over an open one (os.replace) is never read in its place: the next
    read through the sqsh:// backend raises the changed-on-disk error naming the image."""
    from mmengine import fileio

    import custom_modules.fileio.sqsh_backend  # noqa: F401 (registers sqsh://)
    src = tmp_path / 'other'
    src.mkdir()
    (src / 'tiny.txt').write_bytes(b'another image')
    other = mksquashfs(str(src), str(tmp_path / 'other.sqsh'))
    path = _copy(build('gzip'), tmp_path / 'data.sqsh')
    uri = 'sqsh://' + path + '/tiny.txt'
    assert fileio.get(uri) == b'x'
    os.replace(other, path)
    with pytest.raises(SquashfsError, match=f'^{path}: the squashfs image changed on disk'):
        fileio.get(uri)
    with pytest.raises(SquashfsError, match='changed on disk'):
        open_image(path)


@pytest.mark.slow
@needs_mksquashfs
def test_files_past_4_gib_read_byte_for_byte(tmp_path, cache):
    """The course image is 56 GB: past its first 4 GiB every file starts at a 64-bit offset
    (extended file inodes) and fragment blocks lie there too. A 4.1 GiB filler (a pseudo file
    fed by a command: nothing that big on disk but the image) is stored first, then random
    files of whole blocks, blocks and a short block, and small ones in a fragment block; data
    and fragments stored uncompressed (-noD -noF) so the build writes rather than compresses
    (7 s here)."""
    free = shutil.disk_usage(str(tmp_path)).free
    if free < 6 << 30:
        pytest.skip(f'needs 6 GiB free beside {tmp_path} for a 4.1 GiB image, has '
                    f'{free / 2**30:.1f} GiB')
    fill = (4 << 30) + (100 << 20)  # also a file size over 32 bits
    src = tmp_path / 'src'
    rng = np.random.default_rng(7)
    block = 131072
    files = {'z/blocks.bin': rng.bytes(3 * block), 'z/blocks_tail.bin': rng.bytes(2 * block + 7),
             'z/tail.bin': rng.bytes(5000), 'z/w/tiny.bin': rng.bytes(3)}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    path = mksquashfs(str(src), str(tmp_path / 'big.sqsh'), '-noD', '-noF', '-b', str(block),
                      '-p', f'0_fill.bin f 444 0 0 yes | head -c {fill}')
    try:
        assert os.path.getsize(path) > fill
        image = SquashfsImage(path, cache)
        assert image.size('0_fill.bin') == fill
        assert image.read_head('0_fill.bin', 4096) == b'y\n' * 2048
        for rel, data in files.items():
            assert image.read(rel) == data, rel
        # the files were indeed stored past 4 GiB: their blocks (a file over a block ends in
        # a short block of its own), and the fragment block holding the small files
        for rel in ('z/blocks.bin', 'z/blocks_tail.bin'):
            assert int(image._a[image._find(rel)]) > 1 << 32, rel
        for rel in ('z/tail.bin', 'z/w/tiny.bin'):
            frag = int(image._frag_idx[image._find(rel)])
            assert int(image._frag_start[frag]) > 1 << 32, rel
        # the cached index maps the same 64-bit positions
        again = SquashfsImage(path, cache)
        assert again.from_cache and again.read('z/blocks_tail.bin') == files['z/blocks_tail.bin']
    finally:
        os.remove(path)  # 4.1 GiB: not left for the retained tmp folders


@needs_mksquashfs
def test_a_backend_read_stats_the_image_file_once(build, want, tmp_path, cache, monkeypatch):
    """A read through the sqsh:// backend costs one stat of the image file once its folder was
    read before (not a walk of the path and a realpath each time), and still notices the image
    rewritten in place, forgotten, or removed."""
    from mmengine import fileio

    import custom_modules.fileio.sqsh_backend  # noqa: F401 (registers sqsh://)
    deep = tmp_path / 'a' / 'b' / 'c'
    deep.mkdir(parents=True)
    path = _copy(build('gzip'), deep / 'data.sqsh')
    open_image(path, cache)
    names = [p for p in sorted(want) if p.startswith('many/')]
    uris = ['sqsh://' + path + '/' + p for p in names]
    fileio.get(uris[0])
    calls = {'stat': 0, 'lstat': 0, 'open_image': 0}

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper
    monkeypatch.setattr(os, 'stat', counted('stat', os.stat))
    monkeypatch.setattr(os, 'lstat', counted('lstat', os.lstat))
    # where open_path looks open_image up
    monkeypatch.setattr(squashfs.registry, 'open_image',
                        counted('open_image', squashfs.registry.open_image))
    got = {p: hashlib.sha256(fileio.get(u)).hexdigest() for p, u in zip(names, uris)}
    assert got == {p: want[p] for p in names}
    assert calls == {'stat': len(names), 'lstat': 0, 'open_image': 0}, (calls, len(names))
    monkeypatch.undo()

    # rewritten in place (same inode, another size): the next read raises
    with open(path, 'ab') as f:
        f.write(b'\0' * 4096)
    with pytest.raises(squashfs.ImageChangedError, match=f'^{path}: the squashfs image changed'):
        fileio.get(uris[1])
    # forgotten by a process that rebuilt it knowingly: read from the file there now
    squashfs.forget_image(path)
    assert hashlib.sha256(fileio.get(uris[1])).hexdigest() == want[names[1]]
    # removed: the same error, for a folder read before and one not read yet
    os.remove(path)
    with pytest.raises(squashfs.ImageChangedError, match='changed on disk'):
        fileio.get(uris[2])
    with pytest.raises(squashfs.ImageChangedError, match='changed on disk'):
        fileio.get('sqsh://' + path + '/a/text.txt')


@pytest.mark.slow
@needs_mksquashfs
def test_an_image_replaced_during_training_is_one_error_line(tmp_path):
    """The unlabeled dataset does not skip a replaced image's files as unreadable ones, and the
    error raised in a DataLoader worker reaches the tool as one line naming the image."""
    from PIL import Image
    src = tmp_path / 'src'
    src.mkdir()
    for i in range(4):
        Image.new('RGB', (24, 24), (i, 9, 9)).save(src / f'{i}.PNG')
    path = mksquashfs(str(src), str(tmp_path / 'u.sqsh'))
    os.remove(src / '3.PNG')
    other = mksquashfs(str(src), str(tmp_path / 'v.sqsh'))
    script = f"""
import os, sys
sys.path[:0] = [{os.path.join(REPO, 'tools')!r}]
from toolkit import bootstrap
bootstrap.setup()
def main(argv):
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    import custom_modules.datasets.unlabeled  # noqa: F401
    cfg = Config.fromfile({os.path.join(REPO, 'configs/mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py')!r})
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.update(type='UnlabeledImageFolder', data_root='sqsh://' + {path!r})
    init_default_scope('mmpretrain')
    ds = DATASETS.build(ds_cfg)
    ds[0]
    os.replace({other!r}, {path!r})
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1,
                                         collate_fn=lambda b: b)
    for _ in loader:
        pass
    print('read', ds.unreadable.num_files, 'unreadable')
bootstrap.run(main)
"""
    r = run_tool(PY, '-c', script)
    lines = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
    assert r.returncode == 2 and len(lines) == 1, (r.stdout[-2000:], r.stderr[-3000:])
    assert 'Traceback' not in r.stderr and 'unreadable' not in r.stdout + r.stderr, r.stderr
    assert lines[0].startswith(f'error: {path}: the squashfs image changed on disk'), lines[0]


class _Hang(Exception):
    pass


def _fuzz_tree(root) -> dict:
    """A few files covering the layouts: compressible text over several blocks, incompressible
    blocks (stored uncompressed), a sparse block, small files in a compressed and in an
    uncompressed fragment block, an empty file, nested folders, an empty folder."""
    import numpy as np
    rng = np.random.default_rng(5)
    files = {
        'text.txt': b''.join(b'line %d of some text\n' % i for i in range(900)),
        'noise.bin': rng.bytes(2 * BLOCK + 300),
        'sparse.bin': rng.bytes(BLOCK) + bytes(BLOCK) + b'tail' * 50,
        'empty': b'',
        'a/small.txt': b'small and compressible\n' * 20,
        'a/b/tiny': b'x',
        'a/b/c/deep.txt': b'deep\n' * 100,
        'r/1.bin': rng.bytes(700),  # incompressible small files: an uncompressed fragment
        'r/2.bin': rng.bytes(900),
        'r/3.bin': rng.bytes(1500),
    }
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)
    os.makedirs(os.path.join(root, 'a', 'nothing'))
    return files


def _stored_uncompressed(image) -> list:
    """[start, end) of every data block and fragment block stored uncompressed: squashfs has no
    checksums, so a change there reads back as other bytes, which no reader can notice."""
    out = []
    for i in range(len(image._kind)):
        if image._kind[i] != squashfs.FILE:
            continue
        fsize, bs = int(image._b[i]), image.block_size
        frag = int(image._frag_idx[i])
        n = fsize // bs if frag != 0xFFFFFFFF else -(-fsize // bs)
        pos = int(image._a[i])
        for s in image._blocks[int(image._blk[i]):int(image._blk[i]) + n].tolist():
            if s & (1 << 24):
                out.append((pos, pos + (s & 0xFFFFFF)))
            pos += s & 0xFFFFFF
    for start, size in zip(image._frag_start.tolist(), image._frag_size.tolist()):
        if size & (1 << 24):
            out.append((start, start + (size & 0xFFFFFF)))
    return out


@needs_mksquashfs
@pytest.mark.parametrize('tables', ['compressed', 'uncompressed'])
def test_corrupted_images_read_right_or_raise_the_readers_error(tmp_path, tables):
    """400 seeded corruptions of a small gzip image (bit flips, runs of random bytes, and
    truncations; mostly in the superblock, the inode, directory, fragment, export and id tables,
    some in data blocks): opening, listing and reading every file either gives each file's
    original bytes or raises SquashfsError (one line), never another exception or a hang. The
    image has its tables compressed (mksquashfs's default) or not (``-noI -noId``: every
    corruption of a table then reaches the reader's checks instead of gzip's checksum; there
    also every byte of the folder listings with its lowest bit flipped, which turns a '.' in a
    name into a '/').

    In scope, and detected: anything that breaks the structure (positions, counts, sizes and
    names checked against the tables and the file), and any change to a compressed block,
    metadata or data: gzip's checksum fails, or the block's length is wrong. Out of scope, as
    squashfs keeps no checksum a reader could compare: a change inside a data or fragment block
    stored uncompressed (mksquashfs stores incompressible data so) reads back as the changed
    bytes, and in uncompressed tables a change that leaves them consistent (another file size,
    a fragment offset) reads other bytes, even out of a compressed block. Wrong bytes are
    accepted only where the corruption touched such a block or table."""
    import signal
    import struct

    import numpy as np
    src = tmp_path / 'src'
    files = _fuzz_tree(str(src))
    options = ('-noI', '-noId') if tables == 'uncompressed' else ()
    image_path = mksquashfs(str(src), str(tmp_path / 'fuzz.sqsh'), '-b', str(BLOCK), *options)
    original = open(image_path, 'rb').read()
    sb = struct.unpack_from('<Q7Q', original, 40)
    bytes_used, id_start, _, inode_start, dir_start, frag_start, export_start = sb[:7]
    image = SquashfsImage(image_path, str(tmp_path / 'cache'))
    assert {p: image.read(p) for p in image.files()} == files
    uncompressed = _stored_uncompressed(image)
    assert uncompressed and any(s & (1 << 24) == 0 for s in image._frag_size.tolist())
    # each table's metadata blocks: from the first one its pointer list names to its list's end
    tables_start = min(struct.unpack_from('<Q', original, t)[0]
                       for t in (id_start, frag_start, export_start) if t < bytes_used)
    regions = dict(superblock=(0, 96), data=(96, inode_start), inodes=(inode_start, dir_start),
                   directories=(dir_start, tables_start), tables=(tables_start, bytes_used))
    assert all(a < b for a, b in regions.values()), regions
    if tables == 'uncompressed':
        uncompressed.append((inode_start, bytes_used))
    names = list(regions)
    weights = np.array([0.2, 0.15, 0.25, 0.2, 0.2])
    contents = set(files.values())

    def on_alarm(signum, frame):
        raise _Hang()

    old = signal.signal(signal.SIGALRM, on_alarm)
    rng = np.random.default_rng(31)
    outcomes, defects = {}, []
    listings = range(*regions['directories']) if tables == 'uncompressed' else range(0)
    try:
        for case in range(400 + len(listings)):
            data = bytearray(original)
            kind = rng.choice(['flip', 'run', 'truncate'], p=[0.5, 0.38, 0.12])
            if case >= 400:
                at = listings[case - 400]
                data[at] ^= 1
                touched = (at, at + 1)
                kind = 'lowest bit flipped in directories'
            elif kind == 'truncate':
                cut = int(rng.integers(0, len(data)))
                touched = (cut, len(data))
                del data[cut:]
            else:
                region = names[rng.choice(len(names), p=weights)]
                lo, hi = regions[region]
                at = int(rng.integers(lo, hi))
                if kind == 'flip':
                    bits = rng.integers(0, 8, int(rng.integers(1, 4)))
                    spots = [min(at + int(d), hi - 1) for d in rng.integers(0, 8, len(bits))]
                    for spot, bit in zip(spots, bits):
                        data[spot] ^= 1 << int(bit)
                    touched = (min(spots), max(spots) + 1)
                else:
                    n = int(rng.integers(1, 33))
                    data[at:at + n] = rng.bytes(len(data[at:at + n]))
                    touched = (at, at + n)
                kind = f'{kind} in {region}'
            path = tmp_path / f'case{case}.sqsh'
            path.write_bytes(bytes(data))
            where = f'case {case}: {kind} at {touched}'
            wrong = []
            signal.setitimer(signal.ITIMER_REAL, 10)
            try:
                try:
                    damaged = SquashfsImage(str(path), str(tmp_path / f'cache{case}'))
                    listing = damaged.files()
                    stack = ['']
                    while stack:
                        here = stack.pop()
                        for name, sub in damaged.entries(here):
                            if sub == squashfs.DIR:
                                stack.append(f'{here}/{name}'.strip('/'))
                except SquashfsError as e:
                    assert '\n' not in str(e), where
                    outcomes['refused at open'] = outcomes.get('refused at open', 0) + 1
                    continue
                refused = 0
                for p in listing:
                    try:
                        got = damaged.read(p)
                    except SquashfsError as e:
                        assert '\n' not in str(e), where
                        refused += 1
                        continue
                    if got != files.get(p, got if got in contents else None):
                        wrong.append(p)
                damaged.close()
            except _Hang:
                defects.append(f'{where}: hangs')
                continue
            except Exception as e:
                defects.append(f'{where}: {type(e).__name__}: {e}')
                continue
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                path.unlink()
                shutil.rmtree(tmp_path / f'cache{case}', ignore_errors=True)
            if wrong and not any(a < touched[1] and touched[0] < b for a, b in uncompressed):
                defects.append(f'{where}: wrong bytes of {wrong}')
            outcome = ('wrong bytes, a block or table stored uncompressed changed' if wrong else
                       'some reads refused' if refused else 'every file right')
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        signal.signal(signal.SIGALRM, old)
    print(outcomes)
    assert not defects, '\n'.join(defects[:20]) + f'\n({len(defects)} defects; {outcomes})'
    assert outcomes.get('refused at open', 0) > 100 and outcomes.get('some reads refused')


FAKE_APT_GET = '''#!/bin/sh
# dpkg's lock as apt-get meets it: a second apt-get while one runs fails at once
mkdir "$FAKE_APT/lock" 2>/dev/null || { echo "E: Could not get lock $FAKE_APT/lock" >&2; exit 100; }
sleep 1
case " $* " in *" install "*) printf '#!/bin/sh\\n' > "$FAKE_APT/bin/fake-mksquashfs"
                               chmod +x "$FAKE_APT/bin/fake-mksquashfs";; esac
rmdir "$FAKE_APT/lock"
'''


def test_two_test_workers_installing_a_package_at_once_both_get_it(tmp_path):
    """Both xdist workers collect the squashfs tests on a fresh machine and install
    squashfs-tools at the same time (Slurm's fixture may be installing too): neither may skip
    its tests because the other held dpkg's lock."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'apt-get').write_text(FAKE_APT_GET)
    (bin_dir / 'apt-get').chmod(0o755)
    env = dict(os.environ, FAKE_APT=str(tmp_path), PATH=f'{bin_dir}:{os.environ["PATH"]}')
    code = ('import os, sys; os.geteuid = lambda: 0; sys.path.insert(0, sys.argv[1]); '
            'from debian_packages import install_missing; '
            'print(install_missing(["fake-mksquashfs"], ["squashfs-tools"], "squashfs-tools"))')
    procs = [subprocess.Popen([PY, '-c', code, os.path.join(REPO, 'tests')], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert outs == ['None', 'None'], outs
