"""The suite's own temporary folders (tests/conftest.py): a passed test's is emptied at once, since
they may be in RAM (the Makefile's TEST_TMPDIR), and no later test gets its path."""
import os
import textwrap
from pathlib import Path

import pytest

from helpers import PY, TESTS, run_tool

INNER = '''
import os
import pytest

seen = {}


@pytest.mark.parametrize('n', [1, 2])
def test_writes_a_checkpoint(tmp_path, n):
    (tmp_path / 'epoch_1.pth').write_bytes(bytes(1000))
    (tmp_path / 'work_dirs').mkdir()
    seen[n] = tmp_path


def test_fails(tmp_path):
    (tmp_path / 'kept.txt').write_text('for the post-mortem')
    seen['failed'] = tmp_path
    assert False


def test_after_them(tmp_path):
    assert seen[1].is_dir() and not os.listdir(seen[1])
    assert seen[2].is_dir() and not os.listdir(seen[2])
    assert os.listdir(seen['failed']) == ['kept.txt']
    assert len({seen[1], seen[2], seen['failed'], tmp_path}) == 4
'''


def _run_inner(tmp_path, body):
    (tmp_path / 'conftest.py').write_text(Path(TESTS, 'conftest.py').read_text())
    (tmp_path / 'test_inner.py').write_text(textwrap.dedent(body))
    base = tmp_path / 'base'
    r = run_tool(PY, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', f'--basetemp={base}',
                 'test_inner.py', cwd=tmp_path, env=dict(os.environ, PYTHONPATH=TESTS),
                 timeout=120)
    return r, base


# each starts a pytest that imports torch (the suite's conftest): 3.4 s alone, 11 s beside a worker
@pytest.mark.slow
def test_a_passed_tests_folder_is_emptied_and_its_path_never_reused(tmp_path):
    r, base = _run_inner(tmp_path, INNER)
    assert '1 failed, 3 passed' in r.stdout, r.stdout + r.stderr
    # a failed run's folder stays, with the failed test's files
    assert (base / 'test_fails0' / 'kept.txt').exists()


@pytest.mark.slow
def test_a_passed_runs_folder_is_removed(tmp_path):
    r, base = _run_inner(tmp_path, '''
        def test_writes(tmp_path):
            (tmp_path / 'epoch_1.pth').write_bytes(bytes(1000))
    ''')
    assert '1 passed' in r.stdout, r.stdout + r.stderr
    assert not base.exists()
