"""The plan of the code (docs/architecture.md), pinned: custom_modules holds the registry plug-ins
in rooms that import only downwards, tools/toolkit what only the tools share, no import cycle,
and the plug-ins never import the tools' package. Read from the source (every import statement,
at module level or inside a function), so a violation fails here before it fails a user."""
import ast
import os
import subprocess

import pytest

from helpers import PY, REPO

PACKAGES = {'custom_modules': os.path.join(REPO, 'custom_modules'),
            'toolkit': os.path.join(REPO, 'tools', 'toolkit')}
# custom_modules' rooms, lowest first: a module imports from its own room or a lower one
ROOMS = ('errors', 'fileio', 'datasets', 'models', 'evaluation', 'engine')


def _modules():
    """{dotted module name: file} for both packages."""
    found = {}
    for pkg, root in PACKAGES.items():
        for folder, _, files in os.walk(root):
            for f in files:
                if f.endswith('.py'):
                    rel = os.path.relpath(os.path.join(folder, f), root)[:-3].split(os.sep)
                    if rel[-1] == '__init__':
                        rel = rel[:-1]
                    found['.'.join([pkg, *rel])] = os.path.join(folder, f)
    return found


MODULES = _modules()


def _is_package(name):
    return MODULES[name].endswith('__init__.py')


def _imports(name):
    """The project modules that ``name`` imports (a package's __init__ counts as a module)."""
    tree = ast.parse(open(MODULES[name]).read())
    here = name if _is_package(name) else name.rpartition('.')[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = here.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in MODULES else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:  # `import custom_modules.x.y` names x.y's module
                t = t.rpartition('.')[0]
            if t and t != name:
                out.add(t)
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _room(module):
    parts = module.split('.')
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def test_the_rules_see_every_module_and_their_imports():
    # the reader works: it finds the rooms and the imports between them
    assert {'custom_modules.fileio.squashfs', 'custom_modules.engine.hooks.time_limit_hook',
            'toolkit.bootstrap', 'toolkit.data_source'} <= set(MODULES)
    assert 'custom_modules.fileio.squashfs' in GRAPH['custom_modules.fileio.sqsh_backend']
    assert 'custom_modules.datasets.samplers' in GRAPH['custom_modules.engine.runner.loops']


def test_no_import_cycle():
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError('import cycle: ' + ' -> '.join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for n in sorted(GRAPH[m]):
            if not (m.startswith(n + '.') and _is_package(n)):  # a package's own submodules
                visit(n)
        path.pop()
        done.add(m)

    for m in sorted(MODULES):
        visit(m)


def test_the_plug_ins_never_import_the_tools_package():
    bad = {m: sorted(n for n in GRAPH[m] if n.startswith('toolkit'))
           for m in MODULES if m.startswith('custom_modules')}
    assert not {m: n for m, n in bad.items() if n}


def test_rooms_import_only_their_own_or_lower_rooms():
    bad = []
    for m, imported in GRAPH.items():
        if _room(m) is None:
            continue
        for n in imported:
            if _room(n) is not None and ROOMS.index(_room(n)) > ROOMS.index(_room(m)):
                bad.append(f'{m} imports {n}')
    assert not bad, bad


def test_the_plug_in_package_top_level_is_its_rooms():
    top = sorted(e for e in os.listdir(PACKAGES['custom_modules'])
                 if not e.startswith(('__', '.')))
    # moco_transforms.py: the import path configs written before the rooms name
    assert top == sorted([*(r + '.py' if r == 'errors' else r for r in ROOMS),
                          'moco_transforms.py'])


def test_the_tools_package_registers_nothing_and_starts_without_a_registry():
    for m, path in MODULES.items():
        if m.startswith('toolkit'):
            assert 'register_module' not in open(path).read(), m
    # the bootstrap runs before mmdet is imported (it hides mmdet's import-time notice)
    code = ('import sys; sys.path.insert(0, "tools"); from toolkit import bootstrap; '
            'bootstrap.setup(quiet=False); '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in '
            '("mmdet", "mmpretrain", "custom_modules")))')
    r = subprocess.run([PY, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == '[]'


@pytest.mark.slow
@pytest.mark.parametrize('imports', [
    ['custom_modules', 'custom_modules.moco_transforms', 'custom_modules.datasets.unlabeled'],
    ['custom_modules', 'custom_modules.datasets.transforms.moco',
     'custom_modules.datasets.unlabeled']])
def test_old_and_new_pretraining_imports_register_the_same_types(imports):
    """A MoCo config written before the rooms (its custom_imports) still builds its types."""
    code = ('import sys; sys.path.insert(0, "."); '
            'from mmengine.utils import import_modules_from_strings as imp; '
            f'imp({imports!r}); '
            'from mmpretrain.registry import DATASETS, HOOKS, TRANSFORMS; '
            'print(all(r.get(n) is not None for r, n in [(TRANSFORMS, "CV2GaussianBlur"), '
            '(TRANSFORMS, "CV2RandomGrayscale"), (DATASETS, "UnlabeledImageFolder"), '
            '(HOOKS, "UnreadableImageHook"), (HOOKS, "TimeLimitHook")]))')
    r = subprocess.run([PY, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == 'True'
