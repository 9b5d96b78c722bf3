"""The executor protocol: what every backend shares, and the registry of backends by name.

A backend is a kernel table (``KernelTable``: per op, how to make its kernel, when it
applies, what workspace it needs) plus a runtime (``ArrayExecutor``: binding, the arena,
effects, feeds). Nothing in this package imports a kernel library; the backends in
graphnet/backends/ register themselves here, and so may a backend from outside the package
(docs/backends.md).
"""

from .base import ArrayExecutor  # noqa: F401
from .feeds import RunResult, check_feeds  # noqa: F401
from .kernel_table import REFERENCE, KernelEntry, KernelTable, reference_kernel  # noqa: F401
from .registry import available_executors, get_executor, register_executor  # noqa: F401
