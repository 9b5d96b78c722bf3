"""The reference executor: NumPy arrays on the host; variables are updated in place."""

from __future__ import annotations

import numpy as np

from .base import ArrayExecutor


class NumpyExecutor(ArrayExecutor):
    """Interprets plans with NumPy. Parameters are the Variables' own arrays, so every
    plan compiled from the same parameters shares their values."""

    name = "numpy"
    xp = np
