"""The NumPy executor's hand-written numba kernels, and when it runs them.

A few ops whose ``xp`` kernels are many whole-array passes have a numba loop here: training
batch norm and its gradient, the max-pool forward and its gradient from a saved arg-max,
softmax cross-entropy. The executor picks one (``applies``) where numba is installed,
generated kernels are on, and the loop takes the step's attributes; the peak-memory formula
asks the same question, since such a loop needs no workspace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import config
from . import numba_batch_norm, numba_codegen, numba_losses, numba_pool

#: op -> a hand-written numba kernel the NumPy executor runs instead of the op's xp kernel
LIBRARY: dict[str, Callable[..., Any]] = {**numba_batch_norm.KERNELS, **numba_pool.KERNELS, **numba_losses.KERNELS}

#: op -> whether its numba kernel takes a step's attributes (absent: it takes them all)
APPLIES: dict[str, Callable[..., bool]] = {**numba_pool.APPLIES}


def applies(op: str, attrs: dict[str, Any]) -> bool:
    """Whether the executor runs ``op`` with its hand-written numba kernel at these attributes
    (numba installed, generated kernels on, the kernel takes them)."""
    return op in LIBRARY and config.flags.codegen == "numba" and numba_codegen.numba_available() \
        and APPLIES.get(op, lambda **_: True)(**attrs)
