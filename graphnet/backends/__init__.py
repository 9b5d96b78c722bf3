"""The backends graphnet ships, each a kernel table plus a runtime (graphnet.executors).

``numpy``: NumPy arrays on the host, with the CPU kernel library (graphnet/kernels/cpu) and
numba loops generated for fused groups. ``cupy``: CuPy arrays on an NVIDIA GPU, with CUDA
kernels generated for fused groups from the same scalar forms. A backend's module is
imported when a plan first asks for it, so ``import graphnet`` pays for none of them.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..executors import register_executor


def _numpy() -> type[Any]:
    return importlib.import_module("graphnet.backends.numpy.executor").NumpyExecutor


def _cupy() -> type[Any]:
    return importlib.import_module("graphnet.backends.cupy.executor").CupyExecutor


register_executor("numpy", _numpy)
register_executor("cupy", _cupy)
