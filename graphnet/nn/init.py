"""Parameter initialisers (PyTorch's defaults) and the seed that makes them reproducible."""

from __future__ import annotations

import math

import numpy as np

_rng = np.random.default_rng(0)
_plan_seeds = np.random.default_rng([0, 1])  # apart from _rng: compiling never shifts initial weights


def manual_seed(seed: int) -> None:
    """Seed parameter initialisation and the random ops (dropout) of plans compiled from now on
    without a ``seed=``, so that the same script builds the same weights and draws the same masks."""
    global _rng, _plan_seeds
    _rng = np.random.default_rng(seed)
    _plan_seeds = np.random.default_rng([seed, 1])


def next_plan_seed() -> int:
    """The seed of the next plan compiled without ``seed=``, from the sequence manual_seed set."""
    return int(_plan_seeds.integers(0, 2 ** 63))


def uniform(shape: tuple[int, ...], bound: float, dtype: str = "float32") -> np.ndarray:
    """U(-bound, bound) samples."""
    return _rng.uniform(-bound, bound, size=shape).astype(dtype)


def kaiming_uniform(shape: tuple[int, ...], fan_in: int, a: float = math.sqrt(5), dtype: str = "float32") -> np.ndarray:
    """PyTorch's ``kaiming_uniform_`` with leaky-ReLU slope ``a``; with the default a = sqrt(5)
    (what Linear and Conv2d use) the bound is 1 / sqrt(fan_in)."""
    gain = math.sqrt(2.0 / (1 + a * a))
    return uniform(shape, gain * math.sqrt(3.0 / max(fan_in, 1)), dtype)


def normal(shape: tuple[int, ...], std: float = 1.0, dtype: str = "float32") -> np.ndarray:
    """N(0, std^2) samples (PyTorch's Embedding initialisation)."""
    return (_rng.standard_normal(size=shape) * std).astype(dtype)
