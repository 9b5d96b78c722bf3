"""Executors interpret plans; pick one by name with ``gn.compile(..., executor=...)``."""

from .base import ArrayExecutor, check_feeds, get_executor, register_executor  # noqa: F401


def _numpy():
    from .numpy_executor import NumpyExecutor

    return NumpyExecutor


register_executor("numpy", _numpy)
