"""What every tool does first: put the repository root on ``sys.path`` (so configs'
``custom_imports`` find custom_modules from any working directory), import mmdet and mmpretrain
without their notice about an optional package, format a config's text once per process, and
report a user's mistake as one line.

    from toolkit import bootstrap
    ROOT = bootstrap.setup()
    ...
    if __name__ == '__main__':
        bootstrap.run(main)
"""
import functools
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def setup(quiet: bool = True) -> str:
    """The repository root, put first on ``sys.path``; ``quiet``: import the OpenMMLab packages
    now, without their import-time notice (console.quiet_imports)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    if quiet:
        from .console import quiet_imports
        quiet_imports()
    _format_config_once()
    return ROOT


def _format_config_once() -> None:
    """mmengine's ``Config.pretty_text`` runs yapf over the whole config each time it is read:
    the runner reads it three times at its start and once in every checkpoint it saves, 0.1-1.5 s
    each (the Soft Teacher config's text is 40 kB). The same text gives the same result, so each
    text is formatted once per process."""
    try:
        yapf_api = _import_yapf()
    except ImportError:  # mmengine's own dependency: nothing to cache without it
        return
    if hasattr(yapf_api.FormatCode, 'cache_info'):
        return

    @functools.lru_cache(maxsize=8)
    def formatted(source, style):
        return original(source, style_config=dict(style))

    original = yapf_api.FormatCode

    @functools.wraps(original)
    def format_code(source, *args, style_config=None, **kwargs):
        style = tuple(sorted(style_config.items())) if isinstance(style_config, dict) else None
        try:
            hash(style)
        except TypeError:  # a style with list values: not a cache key
            style = None
        if args or kwargs or style is None:
            return original(source, *args, style_config=style_config, **kwargs)
        return formatted(source, style)

    format_code.cache_info = formatted.cache_info
    yapf_api.FormatCode = format_code


def _import_yapf():
    """yapf's formatter, imported under a lock in yapf's cache folder: yapf's first import
    writes its grammar tables there without an atomic rename, and a process importing it
    meanwhile (another rank of the job, another test worker, on a machine or XDG_CACHE_HOME
    where the cache is new) reads a half-written file and fails with EOFError. Where that folder
    cannot be written (a read-only home), yapf keeps its tables in memory: nothing to lock."""
    from filelock import FileLock
    from platformdirs import user_cache_dir
    cache = user_cache_dir('YAPF', 'Google')
    try:
        os.makedirs(cache, exist_ok=True)
        lock = FileLock(os.path.join(cache, 'import.lock'))
        lock.acquire()
    except OSError:
        lock = None
    try:
        from yapf.yapflib import yapf_api
    finally:
        if lock is not None:
            lock.release()
    return yapf_api


def run(main, argv=None):
    """``main(argv)``; a ``UserError`` (custom_modules/errors.py) is printed as ``error: ...`` on
    stderr with exit status 2, no traceback."""
    try:
        return main(argv)
    except ValueError as e:
        # a UserError was raised from custom_modules, so its module is loaded: no import here
        errors = sys.modules.get('custom_modules.errors')
        if errors is None or not isinstance(e, errors.UserError):
            raise
        print(f'error: {_own_message(e)}', file=sys.stderr, flush=True)
        sys.exit(2)


def _own_message(e: Exception) -> str:
    """The error's own message: one raised in a DataLoader worker arrives re-raised in the main
    process with the worker's traceback as its message, whose last line is the original one."""
    text = str(e)
    if '\nOriginal Traceback' not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    name = f'{type(e).__module__}.{type(e).__qualname__}: '
    return last[len(name):] if last.startswith(name) else text
