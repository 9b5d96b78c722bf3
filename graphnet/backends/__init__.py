"""The backends graphnet ships, each a kernel table plus a runtime (graphnet.executors).

``numpy``: NumPy arrays on the host, with the CPU kernel library (graphnet/kernels/cpu) and
numba loops generated for fused groups. A backend's module is imported when a plan first
asks for it, so ``import graphnet`` pays for none of them.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..executors import register_executor


def _numpy() -> type[Any]:
    return importlib.import_module("graphnet.backends.numpy.executor").NumpyExecutor


register_executor("numpy", _numpy)
