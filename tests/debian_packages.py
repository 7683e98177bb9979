"""Debian packages a test group needs (Slurm, squashfs-tools), installed when missing."""
import os
import shutil
import subprocess


def install_missing(binaries, packages, what: str) -> str | None:
    """None when every binary exists or was just installed with apt-get (as root), else the
    reason, for the tests to skip with."""
    if all(shutil.which(b) for b in binaries):
        return None
    if os.geteuid() != 0 or not shutil.which('apt-get'):
        return f'{what} is not installed and apt-get as root is not available to install it'
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    for cmd in (['apt-get', 'update', '-qq'], ['apt-get', 'install', '-y', '-qq', *packages]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode:
            return f'{" ".join(cmd)} failed: {r.stderr.strip()[-300:]}'
    missing = [b for b in binaries if not shutil.which(b)]
    return f'missing after install: {missing}' if missing else None
