"""README.md and docs/*.md stay true to the repository: the README is short, every relative link
and anchor resolves, every repository path they name exists, and every command in their code
blocks runs a tool, launcher or make target that exists, with arguments its parser accepts.

Fast (seconds): the tools are imported and only their argument parsers run.
"""
import argparse
import contextlib
import glob
import inspect
import io
import os
import re
import shlex
import signal
import sys

import pytest
from helpers import REPO, load_file

README = os.path.join(REPO, 'README.md')
PAGES = [README] + sorted(glob.glob(os.path.join(REPO, 'docs', '*.md')))
PAGE_IDS = [os.path.relpath(p, REPO) for p in PAGES]
PATH_ROOTS = ('configs', 'tools', 'tests', 'custom_modules', 'docs')
# a repository path in prose or code: configs/..., tools/... (globs and {a,b} alternatives allowed)
REPO_PATH = re.compile(r'(?<![\w./$=-])((?:%s)/[\w.{},*/-]*)' % '|'.join(PATH_ROOTS))
FENCE = re.compile(r'^```([\w-]*)\n(.*?)^```', re.M | re.S)
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
ASSIGNMENT = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)=(.*)$', re.S)
VARIABLE = re.compile(r'\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?')
# launcher -> the Python tool (tools/X.py) its arguments after its own positionals go to
LAUNCHERS = {
    'tools/dist_train.sh': 'train',
    'tools/dist_test.sh': 'test',
    'tools/slurm_train.sh': 'train',
    'tools/slurm_test.sh': 'test',
    'tools/slurm/train.sbatch': 'train',
    'tools/slurm/test.sbatch': 'test',
}


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def code_blocks(text):
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def prose(text):
    """The text without code blocks and inline code spans (links there are not links)."""
    return re.sub(r'`[^`\n]*`', '', FENCE.sub('', text))


def brace_expand(pattern):
    m = re.search(r'\{([^{}]*)\}', pattern)
    if not m:
        return [pattern]
    return [x for alt in m.group(1).split(',')
            for x in brace_expand(pattern[:m.start()] + alt + pattern[m.end():])]


def missing_paths(path):
    """The expansions of a repository path (glob or {a,b} pattern) that match nothing."""
    bad = []
    for p in brace_expand(path.rstrip('.,;:')):
        if any(c in p for c in '*?['):
            found = glob.glob(os.path.join(REPO, p))
        else:
            found = os.path.exists(os.path.join(REPO, p))
        if not found:
            bad.append(p)
    return bad


def slug(heading):
    """GitHub's anchor of a heading."""
    text = re.sub(r'[`*_]|\[([^\]]*)\]\([^)]*\)', r'\1', heading.strip()).lower()
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(path):
    seen, out = {}, set()
    for line in FENCE.sub('', read(path)).splitlines():
        m = re.match(r'^#{1,6}\s+(.*?)\s*#*$', line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f'{s}-{n}')
    return out


# ---- commands in code blocks ---------------------------------------------------------------------

def logical_lines(block):
    """Lines of a shell block with backslash continuations joined."""
    lines, cur = [], ''
    for line in block.splitlines():
        if line.rstrip().endswith('\\'):
            cur += line.rstrip()[:-1] + ' '
        else:
            lines.append(cur + line)
            cur = ''
    if cur:
        lines.append(cur)
    return lines


def commands(block):
    """(env assignments, argv) of every simple command in a shell block, with the variables
    the block assigns expanded (others, e.g. $USER, become a placeholder word)."""
    variables = {}

    def expand(word):
        return VARIABLE.sub(lambda m: variables.get(m.group(1), 'PLACEHOLDER'), word)

    out = []
    for line in logical_lines(block):
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as e:
            raise AssertionError(f'unparsable shell line {line!r}: {e}')
        segment = []
        for tok in tokens + [';']:
            if tok not in ('&&', '||', ';', '|'):
                segment.append(tok)
                continue
            if segment and segment[0] == 'export':
                segment = segment[1:]
            env = {}
            while segment and ASSIGNMENT.match(segment[0]):
                name, value = ASSIGNMENT.match(segment.pop(0)).groups()
                env[name] = expand(value)
            if segment:
                out.append((env, [expand(t) for t in segment]))
            else:
                variables.update(env)  # NAME=value alone: a variable later lines use
            segment = []
    return out


class Parsed(Exception):
    pass


_modules = {}


def tool_module(rel):
    """Import a tool file as a module, without its import-time side effects leaking out (signal
    handlers, environment)."""
    if rel not in _modules:
        handler = signal.getsignal(signal.SIGUSR1)
        env = dict(os.environ)
        try:
            module = load_file(rel, 'readme_tool_' + re.sub(r'\W', '_', rel))
        finally:
            signal.signal(signal.SIGUSR1, handler)
            os.environ.clear()
            os.environ.update(env)
        _modules[rel] = module
    return _modules[rel]


def parse_tool_args(rel, argv):
    """Run the argument parser of tools/... .py on argv; returns argparse's error text or None.
    A tool's parse_args(argv) when it has one (it may check more after parsing), else its main()
    with ArgumentParser.parse_args stopped right after parsing."""
    module = tool_module(rel)
    err, env = io.StringIO(), dict(os.environ)
    original = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise Parsed(original(self, argv, namespace))

    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            if hasattr(module, 'parse_args'):
                module.parse_args(argv)
            else:
                argparse.ArgumentParser.parse_args = parse_only
                try:
                    main = module.main
                    main(argv) if inspect.signature(main).parameters else main()
                finally:
                    argparse.ArgumentParser.parse_args = original
                raise AssertionError(f'{rel}: main() returned without parsing arguments')
    except Parsed:
        pass
    except SystemExit as e:
        if e.code not in (0, None):
            return err.getvalue().strip() or f'exit status {e.code}'
    finally:
        os.environ.clear()
        os.environ.update(env)
    return None


def make_targets():
    return set(re.findall(r'^([\w-]+):', read(os.path.join(REPO, 'Makefile')), re.M))


def case_values(script, name):
    """The values a shell script's `case ${NAME:-default} in ... esac` accepts, or None."""
    m = re.search(r'case \$\{?%s(?::-[^}]*)?\}? in\n(.*?)\besac' % name, script, re.S)
    if not m:
        return None
    values = set()
    for pat in re.findall(r'^\s*([^\s()*][^()\n]*)\)', m.group(1), re.M):
        values.update(v.strip() for v in pat.split('|'))
    return values


def check_command(env, argv, where):
    """Problems with one command: its tool, launcher or make target and its arguments."""
    problems = []
    cmd = argv[0]
    if cmd == 'make':
        targets = [a for a in argv[1:] if not a.startswith('-') and '=' not in a] or ['']
        problems += [f'{where}: make target {t!r} not in Makefile' for t in targets
                     if t not in make_targets()]
        return problems, bool(targets)
    if os.path.basename(cmd) in ('python', 'python3') and len(argv) > 1 and argv[1].endswith('.py'):
        script, args = argv[1], argv[2:]
    elif cmd in ('bash', 'sh') and len(argv) > 1:
        script, args = argv[1], argv[2:]
    elif cmd == 'sbatch':
        scripts = [i for i, a in enumerate(argv) if a.endswith('.sbatch')]
        if not scripts:
            return [f'{where}: sbatch without a .sbatch script'], True
        script, args = argv[scripts[0]], argv[scripts[0] + 1:]
    elif cmd.startswith(('tools/', './tools/')):
        script, args = cmd, argv[1:]
    else:
        return [], False  # source, git, pytest, ...: not a repository tool
    script = os.path.normpath(script)
    if not script.startswith(('tools' + os.sep, '.ci' + os.sep)):
        return [], False
    path = os.path.join(REPO, script)
    if not os.path.isfile(path):
        return [f'{where}: {script} does not exist'], True
    text = read(path)
    if script.endswith('.py'):
        problems += [f'{where}: {script} {" ".join(args)}: {e}'
                     for e in [parse_tool_args(script, args)] if e]
        config = args[0] if args else ''
        if config.startswith('configs/') and not os.path.isfile(os.path.join(REPO, config)):
            problems.append(f'{where}: config {config} does not exist')
        return problems, True
    # a shell launcher: the environment it is given must mean something to it
    common = read(os.path.join(REPO, 'tools', 'launcher_common.sh'))
    for name, value in env.items():
        if not re.search(r'\b%s\b' % name, text + common):
            problems.append(f'{where}: {script} does not read {name}')
        allowed = case_values(text, name)
        if allowed is not None and value not in allowed:
            problems.append(f'{where}: {name}={value}: {script} accepts {sorted(allowed)}')
    kind = LAUNCHERS.get(script)
    if kind:
        positional = {'tools/dist_train.sh': 2, 'tools/dist_test.sh': 3, 'tools/slurm_train.sh': 3,
                      'tools/slurm_test.sh': 4}.get(script, 0)
        if len(args) < positional:
            return problems + [f'{where}: {script} needs {positional} arguments: {args}'], True
        head, rest = args[:positional], args[positional:]
        if script == 'tools/dist_train.sh':
            tool_args, count = [head[0]], head[1]
        elif script == 'tools/dist_test.sh':
            tool_args, count = head[:2], head[2]
        elif script == 'tools/slurm_train.sh':
            tool_args, count = [head[2]], '1'
            if rest and not rest[0].startswith('-'):  # optional WORK_DIR
                tool_args += ['--work-dir', rest.pop(0)]
        elif script == 'tools/slurm_test.sh':
            tool_args, count = head[2:4], '1'
        else:  # .sbatch: CONFIG [tool args]
            tool_args, count = [], '1'
        if not count.isdigit():
            problems.append(f'{where}: {script}: GPUS {count!r} is not a number')
        tool_args += rest
        problems += [f'{where}: {script} {" ".join(args)}: {e}'
                     for e in [parse_tool_args(f'tools/{kind}.py', tool_args)] if e]
        config = tool_args[0] if tool_args else ''
        if config.startswith('configs/') and not os.path.isfile(os.path.join(REPO, config)):
            problems.append(f'{where}: config {config} does not exist')
    return problems, True


# ---- tests ---------------------------------------------------------------------------------------

def test_readme_is_short():
    n = len(read(README).splitlines())
    assert n < 200, f'README.md has {n} lines: move details to docs/'


@pytest.mark.parametrize('page', PAGES, ids=PAGE_IDS)
def test_links_resolve(page):
    bad = []
    for target in LINK.findall(prose(read(page))):
        if re.match(r'^[a-z]+:', target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition('#')
        dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(dest):
            bad.append(f'{target}: {os.path.relpath(dest, REPO)} does not exist')
        elif anchor and dest.endswith('.md') and anchor not in anchors(dest):
            bad.append(f'{target}: no heading #{anchor} in {os.path.relpath(dest, REPO)}')
    assert not bad, '\n'.join(bad)


@pytest.mark.parametrize('page', PAGES, ids=PAGE_IDS)
def test_named_paths_exist(page):
    """configs/..., tools/..., tests/..., custom_modules/..., docs/... named anywhere (prose,
    code, comments; globs must match something) exist; paths built from shell variables are
    checked by test_commands after expansion."""
    bad = [f'{p}: {m}' for p in REPO_PATH.findall(read(page)) for m in missing_paths(p)]
    assert not bad, '\n'.join(bad)


@pytest.mark.parametrize('page', PAGES, ids=PAGE_IDS)
def test_commands(page):
    """Every command in a code block that runs a repository tool (python tools/X.py, tools/*.sh,
    tools/slurm/*, sbatch tools/slurm/*.sbatch, make X) names something that exists, and the
    arguments it passes on to a Python tool are accepted by that tool's parser."""
    problems, checked = [], 0
    for i, (lang, block) in enumerate(code_blocks(read(page))):
        if lang not in ('', 'bash', 'sh', 'shell', 'console'):
            continue
        for env, argv in commands(block):
            where = f'{os.path.relpath(page, REPO)} block {i + 1}'
            found, is_tool = check_command(env, argv, where)
            problems += found
            checked += is_tool
            for arg in argv:  # expanded paths, e.g. $V-s2-20e_labeled512.py
                if arg.startswith(tuple(r + '/' for r in PATH_ROOTS)):
                    problems += [f'{where}: {m} does not exist' for m in missing_paths(arg)]
    # inline commands in prose and tables, e.g. a benchmark's `python tools/benchmarks/X.py --num 5`
    # (synopses with [optional] parts, alternatives or ... are usage, not commands)
    for span in re.findall(r'`(python3? tools/[^`]+)`', FENCE.sub('', read(page))):
        if not re.search(r'[\[(]|\.\.\.', span):
            for env, argv in commands(span):
                found, is_tool = check_command(env, argv, f'{os.path.relpath(page, REPO)} `{span}`')
                problems += found
                checked += is_tool
    assert not problems, '\n'.join(problems)
    if page == README:
        assert checked >= 20, f'only {checked} tool commands found in README.md code blocks'


def test_the_checker_catches_mistakes():
    """The checks above fail on what they are meant to catch."""
    def problems(line):
        return [p for env, argv in commands(line) for p in check_command(env, argv, 'x')[0]]

    assert problems('python tools/train.py configs/nope.py')  # missing config
    assert problems('python tools/train.py ' + os.path.relpath(glob.glob(
        os.path.join(REPO, 'configs/mocov2/*.py'))[0], REPO) + ' --no-such-flag')
    assert problems('python tools/test.py C')  # test.py: no checkpoint given
    assert problems('python tools/check_dataset.py /labeled --quik')  # main()-parsed tool
    assert problems('python tools/benchmarks/bench_index.py --nope')  # main() reads sys.argv
    assert problems('tools/nope.sh')
    assert problems('make no-such-target')
    assert problems('RECIPE=fast LABELED=/l tools/slurm/submit_pipeline.sh')
    assert problems('tools/dist_train.sh CONFIG two --data-root /x')
    assert not problems('make demo DATA=/x')
    assert not problems('D=configs/mocov2\npython tools/browse_dataset.py '
                        '$D/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py --num 2')
    assert missing_paths('configs/faster_rcnn/*_2xb2-s{1,2,9}*') == [
        'configs/faster_rcnn/*_2xb2-s9*']
