"""Where generated kernels (and the choices timed for them) are kept between processes."""

from __future__ import annotations

import os


def cache_dir() -> str:
    """Where generated sources and numba's compiled kernels are kept."""
    root = os.environ.get("GRAPHNET_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "graphnet")
    return os.path.join(root, "kernels")


