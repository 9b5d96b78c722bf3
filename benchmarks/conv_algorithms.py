"""Each CPU convolution algorithm on the reference networks' convolution shapes, in ms (median).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/conv_algorithms.py

Prints one row per layer: forward, weight gradient and input gradient for every algorithm
of graphnet/executors/conv_algorithms.py, the one the cost rule (chooser.rule) picks
marked with '*'. The cost rule (used with GRAPHNET_AUTOTUNE=0) was read off this table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from graphnet.kernels.cpu.conv import algorithms, chooser

#: layer -> (input shape, weight shape, stride, padding): the seed CNN at batch 64, the ResNet at 128
LAYERS = {
    "cnn conv1": ((64, 1, 28, 28), (10, 1, 5, 5), 1, 0),
    "cnn conv2": ((64, 10, 12, 12), (20, 10, 5, 5), 1, 0),
    "resnet stem": ((128, 1, 28, 28), (16, 1, 3, 3), 1, 1),
    "resnet 1a": ((128, 16, 28, 28), (16, 16, 3, 3), 2, 1),
    "resnet 1b": ((128, 16, 14, 14), (16, 16, 3, 3), 1, 1),
    "resnet 1 skip": ((128, 16, 28, 28), (16, 16, 1, 1), 2, 0),
    "resnet 2a": ((128, 16, 14, 14), (32, 16, 3, 3), 2, 1),
    "resnet 2b": ((128, 32, 7, 7), (32, 32, 3, 3), 1, 1),
    "resnet 3a": ((128, 32, 7, 7), (64, 32, 3, 3), 2, 1),
    "resnet 3b": ((128, 64, 4, 4), (64, 64, 3, 3), 1, 1),
}


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for layer, (x_shape, w_shape, stride, padding) in LAYERS.items():
        attrs = {"stride": (stride, stride), "padding": (padding, padding), "dilation": (1, 1), "groups": 1}
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32)
        g = rng.standard_normal(algorithms.gemm_forward(x, w, **attrs).shape, dtype=np.float32)
        inputs = {"conv2d": (x, w), "conv2d_grad_weight": (x, g, w), "conv2d_grad_input": (g, w, x)}
        cells = []
        for op, arrays in inputs.items():
            picked = chooser.rule(op, x_shape, w_shape, attrs)
            for name in chooser.candidates(op, x_shape, w_shape, attrs):
                kernel = algorithms.ALGORITHMS[op][name][0]
                ms = median_ms(lambda: kernel(*arrays, **attrs), args.repeats)
                cells.append(f"{op.removeprefix('conv2d_') if op != 'conv2d' else 'forward'}:{name}{'*' if name == picked else ''} {ms:.2f}")
        print(f"{layer:<14} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
