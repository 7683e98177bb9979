"""File access below the datasets: squashfs images read without mounting, and crash-safe writes."""
from . import atomic_local, sqsh_backend  # noqa: F401  (register the two backends)
