"""Debian packages a test group needs (Slurm, squashfs-tools), installed when missing."""
import os
import shutil
import subprocess
import tempfile

from filelock import FileLock

# apt-get holds dpkg's lock while it installs: a second apt-get started meanwhile (the other xdist
# worker collecting the squashfs tests, or installing Slurm) fails at once with "Could not get
# lock" and its tests would skip. The test processes take turns through this file; apt-get waits
# for dpkg's lock held by anything else.
LOCK = os.path.join(tempfile.gettempdir(), 'openmmlab-tests-apt-get.lock')
APT_WAIT = ['-o', 'DPkg::Lock::Timeout=600']


def install_missing(binaries, packages, what: str) -> str | None:
    """None when every binary exists or was just installed with apt-get (as root), else the
    reason, for the tests to skip with."""
    if all(shutil.which(b) for b in binaries):
        return None
    if os.geteuid() != 0 or not shutil.which('apt-get'):
        return f'{what} is not installed and apt-get as root is not available to install it'
    with FileLock(LOCK):
        if all(shutil.which(b) for b in binaries):  # installed while this process waited
            return None
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        for cmd in (['apt-get', *APT_WAIT, 'update', '-qq'],
                    ['apt-get', *APT_WAIT, 'install', '-y', '-qq', *packages]):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if r.returncode:
                return f'{" ".join(cmd)} failed: {r.stderr.strip()[-300:]}'
    missing = [b for b in binaries if not shutil.which(b)]
    return f'missing after install: {missing}' if missing else None
