"""Training-mode batch norm on the CPU in two passes over memory each way, with numba.

``batch_norm_train`` and ``batch_norm_train_grad`` are defined once, in graphnet/ops/norm.py,
with kernels written against ``xp`` (NumPy, CuPy). Written with whole-array operations those
kernels pass over the activation some ten times forward and eighteen times backward; these
loops do it in two each way (the forward takes both moments in one pass, about a shift), the
channels shared among the threads, and accumulate in float64. The NumPy executor uses them where numba is installed (they are
compiled once per machine and cached beside this file, or in numba's user cache), and
tests hold them to the ``xp`` kernels.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import numpy as np

from ...ops.common import into_each
from . import threads


@functools.lru_cache(maxsize=1)
def _kernels() -> tuple[Callable[..., None], Callable[..., None]]:
    import numba  # only plans with training batch norm pay for importing it

    @numba.njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc"})
    def forward(x, gamma, beta, eps, relu, y, mean, var, unbiased, first, stop):  # pragma: no cover - compiled
        n_count, channels, inner = x.shape
        count = n_count * inner
        for c in range(first, stop):
            # one pass for both moments, in float64 about a shift (the channel's first value)
            # so that a large mean does not cancel the variance away
            shift0 = np.float64(x[0, c, 0]) if count > 0 else 0.0
            total = 0.0
            total_sq = 0.0
            for n in range(n_count):
                for s in range(inner):
                    d = x[n, c, s] - shift0
                    total += d
                    total_sq += d * d
            centred = total / count
            m = shift0 + centred
            squares = max(total_sq - total * centred, 0.0)
            v = squares / count
            mean[c] = m
            var[c] = v
            unbiased[c] = squares / (count - 1) if count > 1 else math.nan
            scale = gamma[c] / math.sqrt(np.float64(var[c]) + eps)
            shift = beta[c] - mean[c] * scale
            for n in range(n_count):
                for s in range(inner):
                    v = x[n, c, s] * scale + shift
                    y[n, c, s] = v if not relu or v > 0 or v != v else 0.0

    @numba.njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc"})
    def backward(g, x, mean, var, gamma, eps, out, relu, dx, dgamma, dbeta, first, stop):  # pragma: no cover
        n_count, channels, inner = x.shape
        count = n_count * inner
        for c in range(first, stop):
            inv = 1.0 / math.sqrt(np.float64(var[c]) + eps)
            m = np.float64(mean[c])
            sum_g = 0.0
            sum_gx = 0.0
            for n in range(n_count):
                for s in range(inner):
                    gv = g[n, c, s] if not relu or out[n, c, s] > 0 else 0.0
                    sum_g += gv
                    sum_gx += gv * (x[n, c, s] - m)
            sum_gx *= inv
            dbeta[c] = sum_g
            dgamma[c] = sum_gx
            k = gamma[c] * inv / count
            mean_g = sum_g
            for n in range(n_count):
                for s in range(inner):
                    xhat = (x[n, c, s] - m) * inv
                    gv = g[n, c, s] if not relu or out[n, c, s] > 0 else 0.0
                    dx[n, c, s] = k * (count * gv - mean_g - xhat * sum_gx)

    return forward, backward


#: a smaller activation is normalised on one thread
SPLIT_MIN_ELEMENTS = 1 << 16


def _by_channels(loop: Callable[[int, int], None], channels: int, elements: int) -> None:
    """``loop(first, stop)`` over every channel, the channels shared among the threads (each
    channel's work is independent, and the loops release the GIL)."""
    parts = threads.parts_for(elements, SPLIT_MIN_ELEMENTS, channels)
    threads.run_parts([lambda s=s, e=e: loop(s, e) for s, e in threads.spans(channels, parts)])


def _as_3d(x: Any) -> Any:
    """``x`` (N, C, ...) as a contiguous (N, C, rest) array (a view where it can be)."""
    return np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)


def _results(out: Any, shapes: tuple[tuple[int, ...], ...], dtype: Any) -> list[Any]:
    """The arrays to write: each ``out`` entry given (C-contiguous), else a new array."""
    given = out if out is not None else (None,) * len(shapes)
    return [target if target is not None and target.flags.c_contiguous else np.empty(shape, dtype)
            for target, shape in zip(given, shapes)]


def batch_norm_train(x: Any, *rest: Any, eps: float, momentum: float, stats: bool, weight: bool,
                     bias: bool, relu: bool, out: Any = None) -> tuple[Any, Any, Any, Any]:
    """What graphnet.ops.norm's ``batch_norm_train`` kernel computes, for NumPy arrays (written
    into ``out``'s arrays where given)."""
    forward, _ = _kernels()
    affine = rest[2:] if stats else rest
    channels = x.shape[1]
    gamma = affine[0] if weight else np.ones(channels, x.dtype)
    beta = affine[-1] if bias else np.zeros(channels, x.dtype)
    y, mean, var, unbiased = _results(out, (x.shape,) + ((channels,),) * 3, x.dtype)
    args = (_as_3d(x), gamma, beta, float(eps), bool(relu), y.reshape(x.shape[0], channels, -1), mean, var, unbiased)
    _by_channels(lambda first, stop: forward(*args, first, stop), channels, x.size)
    return into_each(np, (y, mean, var, unbiased), out)


def batch_norm_train_grad(g: Any, x: Any, mean: Any, var: Any, *rest: Any, eps: float,
                          weight: bool, relu: bool, out: Any = None) -> tuple[Any, Any, Any]:
    """What graphnet.ops.norm's ``batch_norm_train_grad`` kernel computes, for NumPy arrays
    (written into ``out``'s arrays where given)."""
    _, backward = _kernels()
    channels = x.shape[1]
    gamma = rest[0] if weight else np.ones(channels, x.dtype)
    dx, dgamma, dbeta = _results(out, (x.shape, (channels,), (channels,)), x.dtype)
    x3 = _as_3d(x)
    args = (_as_3d(g), x3, mean, var, gamma, float(eps), _as_3d(rest[-1]) if relu else x3, bool(relu),
            dx.reshape(x.shape[0], channels, -1), dgamma, dbeta)
    _by_channels(lambda first, stop: backward(*args, first, stop), channels, x.size)
    return into_each(np, (dx, dgamma, dbeta), out)


#: op name -> the NumPy executor's numba implementation
