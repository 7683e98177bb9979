"""`make demo DATA=DIR` (tools/demo.sh) on data as users have it: the unlabeled set as a squashfs
image (DIR/unlabeled.sqsh, read as it is) and the labeled set in COCO format
(DIR/labeled/annotations/instances_<split>.json). Shrunk only in data: 16 unlabeled and 4+2
labeled generated images, so each epoch is one iteration."""
import json
import os
import shutil
import sys

import pytest
from helpers import run_tool


@pytest.mark.slow
def test_demo_runs_from_a_squashfs_image_and_coco_labels(tmp_path):
    from make_synthetic_data import make_dataset, pack_unlabeled
    from squashfs_tools import mksquashfs_unavailable
    why = mksquashfs_unavailable()
    if why:
        pytest.skip(f'demo test skipped: {why}')
    data = tmp_path / 'data'
    make_dataset(str(data), seed=0, num_unlabeled=16, num_train=4, num_val=2, unlabeled_size=96,
                 coco=True)
    pack_unlabeled(data)
    shutil.rmtree(data / 'labeled')
    coco = data / 'labeled_coco'
    # the classes of a user's set, not the course's 100: only the categories with boxes, their
    # ids left with gaps
    files = [coco / 'annotations' / f'instances_{s}.json' for s in ('training', 'validation')]
    sets = [json.load(open(f)) for f in files]
    used = {a['category_id'] for d in sets for a in d['annotations']}
    for f, d in zip(files, sets):
        d['categories'] = [c for c in d['categories'] if c['id'] in used]
        json.dump(d, open(f, 'w'))
    names = [c['name'] for c in sets[0]['categories']]
    assert len(names) < 100
    coco.rename(data / 'labeled')
    out = tmp_path / 'demo'
    env = dict(os.environ, DATA=str(data), OUT=str(out), SKIP_SCRATCH='1', PYTHON=sys.executable)
    r = run_tool('demo.sh', env=env, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    # pretraining read the image itself (its record names it), nothing was unpacked
    assert 'unlabeled.sqsh' in open(out / 'mocov2' / 'run_inputs.json').read()
    assert not (data / 'unlabeled').exists()
    results = open(out / 'results.txt').read()
    assert results.count(' Average ') == 12, results
    assert os.path.getsize(out / 'pictures' / 'predictions.png') > 0
    assert os.path.getsize(out / 'pictures' / 'curves.png') > 0
    # the detector's classes are the COCO file's, not the course's 100
    import torch
    ckpt = torch.load(open(out / 'frcnn_mocov2' / 'last_checkpoint').read().strip(),
                      map_location='cpu', weights_only=False)
    assert list(ckpt['meta']['dataset_meta']['classes']) == names
