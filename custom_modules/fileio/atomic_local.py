"""Crash-safe checkpoint files.

mmengine's local file backend writes checkpoints with ``open(path, 'wb').write(...)``: a job
killed during the write (preemption, time limit, kill -9) leaves a truncated ``epoch_N.pth``
behind. The ``atomic_local`` backend registered here writes a temporary file in the same folder,
fsyncs it and renames it over the target, so a checkpoint file is either complete or absent.
The training configs choose it for their checkpoints (``default_hooks.checkpoint.backend_args``,
which our hooks that save follow too: custom_modules/hooks.py); mmengine's ``local`` backend, the
one every other write goes through, is left as it is.
"""
import os
import tempfile

from mmengine.fileio.backends import LocalBackend, register_backend


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicLocalBackend(LocalBackend):

    def put(self, obj: bytes, filepath) -> None:
        folder = os.path.dirname(os.fspath(filepath)) or '.'
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.part')
        try:
            # mkstemp makes the file 0600; give it the mode open() would (0666 less the umask),
            # so that teammates on a shared cluster can read the checkpoints
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


register_backend('atomic_local', AtomicLocalBackend)
