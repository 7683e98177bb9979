"""Crash-safe checkpoint files.

mmengine's local file backend writes checkpoints with ``open(path, 'wb').write(...)``: a job
killed during the write (preemption, time limit, kill -9) leaves a truncated ``epoch_N.pth``
behind. The ``atomic_local`` backend registered here writes a temporary file in the same folder,
fsyncs it and renames it over the target, so a checkpoint file is either complete or absent.
The training configs choose it for their checkpoints (``default_hooks.checkpoint.backend_args``,
which our hooks that save follow too: custom_modules/engine/hooks/checkpoint_hooks.py);
mmengine's ``local`` backend, the one every other write goes through, is left as it is.
:func:`atomic_open` is the same write for the project's other files (caches, records).
"""
import contextlib
import os
import tempfile

from mmengine.fileio.backends import LocalBackend, register_backend


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path, mode: str = 'wb', encoding: str | None = None):
    """A file to write whose content replaces ``path`` only when the block ends without an
    error: a temporary file in the same folder, fsynced, then renamed over ``path``. A reader
    (or a job killed mid-write) sees the old file or the whole new one, never a part."""
    folder = os.path.dirname(os.fspath(path)) or '.'
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.part')
    try:
        # mkstemp makes the file 0600; give it the mode open() would (0666 less the umask),
        # so that teammates on a shared cluster can read it
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class AtomicLocalBackend(LocalBackend):

    def put(self, obj: bytes, filepath) -> None:
        with atomic_open(filepath) as f:
            f.write(obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


register_backend('atomic_local', AtomicLocalBackend)
