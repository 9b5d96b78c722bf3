"""Compiling the NumPy backend's kernels ahead of the first run: ``graphnet prepare``.

The CPU kernel library is numba code compiled on first use and kept in numba's cache (per
machine and numba version, next to the library's sources or under ``NUMBA_CACHE_DIR``);
generated fused loops are kept in graphnet's kernel cache (``GRAPHNET_CACHE_DIR``). Left to
the first training step, compiling them takes most of its 8-13 seconds. ``prepare`` compiles
them once, at install time (scripts/setup.sh runs it): every convolution algorithm for every
convolution op and both float dtypes (autotuning times them all at a new shape), the hand-written
loops (batch norm, pooling, softmax cross-entropy), and one training and one evaluation step of
small networks shaped like the reference ones (a LeNet-like CNN, a residual block with batch
norm, an MLP), whose fused groups are the common ones. Nothing it compiles changes what a
run computes: a prepared process and an unprepared one give bit-identical results.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import config
from .backends.numpy.kernel_table import numba_on
from .compile import compile as compile_plan
from .kernels.cpu.conv import algorithms, chooser
from .losses import cross_entropy
from . import nn
from .nn.init import manual_seed
from .ops import relu
from .optim import SGD, Adam, RMSprop
from .tensor import placeholder

#: (input, weight, attributes) of the convolution shapes that between them reach every algorithm
CONV_CASES = (
    ((2, 8, 7, 7), (8, 8, 3, 3), {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}),
    ((2, 8, 7, 7), (8, 8, 3, 3), {"stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "groups": 1}),
    ((2, 8, 7, 7), (16, 8, 1, 1), {"stride": (2, 2), "padding": (0, 0), "dilation": (1, 1), "groups": 1}),
    ((2, 8, 7, 7), (16, 8, 1, 1), {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}),
    ((2, 1, 12, 12), (4, 1, 5, 5), {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}),
    ((2, 4, 9, 9), (6, 4, 5, 5), {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}),
)


def _conv_operands(op: str, x: np.ndarray, w: np.ndarray, attrs: dict[str, Any]) -> tuple[np.ndarray, ...]:
    geo = algorithms._geometry(x.shape, w.shape, attrs)
    g = np.ones((geo.n, geo.o, geo.ho, geo.wo), x.dtype)
    return {"conv2d": (x, w), "conv2d_grad_input": (g, w, x), "conv2d_grad_weight": (x, g, w)}[op]


def _convolutions(dtypes: tuple[str, ...]) -> int:
    """Run every candidate algorithm of every convolution op once per case and dtype."""
    count = 0
    for dtype in dtypes:
        for x_shape, w_shape, attrs in CONV_CASES:
            x, w = np.ones(x_shape, dtype), np.ones(w_shape, dtype)
            for op in algorithms.CONV_OPS:
                arrays = _conv_operands(op, x, w, attrs)
                for name in chooser.candidates(op, x_shape, w_shape, attrs):
                    algorithms.ALGORITHMS[op][name][0](*arrays, **attrs)
                    count += 1
    return count


class _Block(nn.Module):
    """A residual block with batch norm, as the reference ResNet's (projected skip)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.skip = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))

    def forward(self, x: Any) -> Any:
        h = relu(self.bn1(self.conv1(x)))
        return relu(self.bn2(self.conv2(h)) + self.skip(x))


def _networks() -> list[tuple[Any, Any, tuple[int, ...]]]:
    """(model, optimizer, input shape) of small networks shaped like the reference ones."""
    cnn = nn.Sequential(nn.Conv2d(1, 10, kernel_size=5), nn.MaxPool2d(2, 2), nn.ReLU(),
                        nn.Conv2d(10, 20, kernel_size=5), nn.MaxPool2d(2, 2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(320, 120), nn.ReLU(), nn.Linear(120, 10))
    resnet = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), _Block(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    return [(cnn, RMSprop(lr=1e-3), (1, 28, 28)), (resnet, Adam(lr=1e-3), (1, 28, 28)), (mlp, SGD(lr=0.1), (784,)),
            (mlp, Adam(lr=1e-3), (784,))]


def _steps() -> int:
    """One training step and one evaluation step of each small network, at batch 4."""
    rng = np.random.default_rng(0)
    runs = 0
    for model, optimizer, shape in _networks():
        x = placeholder("x", (None, *shape))
        labels = placeholder("labels", (None,), dtype="int64")
        feeds = {"x": rng.standard_normal((4, *shape)).astype(np.float32), "labels": rng.integers(0, 10, 4)}
        model.train()
        compile_plan(cross_entropy(model(x), labels), optimizer=optimizer, seed=0).run(feeds)
        model.eval()
        compile_plan({"logits": model(x)}).run({"x": feeds["x"]})
        runs += 2
    return runs


def prepare(dtypes: tuple[str, ...] = ("float32", "float64")) -> dict[str, Any]:
    """Compile the NumPy backend's kernel library and the common fused loops into their caches;
    returns what was run and how long it took. Does nothing where numba kernels are off."""
    start = time.perf_counter()
    if not numba_on():
        return {"skipped": "numba is not installed or GRAPHNET_CODEGEN=numpy", "seconds": 0.0}
    manual_seed(0)
    with config.options(autotune=False):  # the cost rule: no timing files written for these tiny shapes
        convolutions = _convolutions(dtypes)
        steps = _steps()
    return {"convolution_algorithm_runs": convolutions, "plan_runs": steps,
            "seconds": round(time.perf_counter() - start, 2)}
