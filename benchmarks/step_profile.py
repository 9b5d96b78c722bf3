"""Where a graphnet training step spends its time, per op, with every optimisation off and on.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/step_profile.py resnet 128

Runs the plan's steps one at a time (as the executor does) and sums each op's time over a
few steps after warm-up; prints the step count, the time in convolutions, matrix products and
pooling, the time in everything else (elementwise work, reductions, batch norm, updates),
and the slowest ops. "off" is the plan with fusion, its pattern passes and generated
kernels switched off; "on" is the default plan.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import numpy as np

import graphnet as gn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from mnist_cnn import seed_cnn  # noqa: E402 - the examples' own networks
from resnet import ResNet  # noqa: E402

HEAVY = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight", "matmul", "avg_pool2d", "avg_pool2d_grad",
         "max_pool2d", "max_pool2d_grad")
OFF = {"fuse": False, "codegen": "numpy",
       "disabled_passes": {"fuse_batch_norm", "fold_batch_norm", "fuse_cross_entropy"}}


def build(name: str) -> tuple[gn.Tensor, gn.Tensor, gn.nn.Module, gn.optim.Optimizer]:
    gn.manual_seed(0)
    labels = gn.placeholder("labels", (None,), dtype="int64")
    if name == "mlp":
        x = gn.placeholder("x", (None, 784))
        model = gn.nn.Sequential(gn.nn.Linear(784, 512), gn.nn.ReLU(), gn.nn.Linear(512, 512), gn.nn.ReLU(),
                                 gn.nn.Linear(512, 10))
        return x, labels, model, gn.optim.Adam(lr=1e-3)
    x = gn.placeholder("x", (None, 1, 28, 28))
    if name == "cnn":
        return x, labels, seed_cnn(), gn.optim.RMSprop(lr=1e-3)
    return x, labels, ResNet(), gn.optim.Adam(lr=3e-3)


def profile(plan: gn.CompiledPlan, feeds: dict, steps: int) -> dict[str, float]:
    """Seconds per training step spent in each op (the effects included)."""
    totals: dict[str, float] = defaultdict(float)
    for _ in range(steps):
        for op, seconds in plan.executor.time_steps(feeds).items():
            totals[op] += seconds
    return {op: seconds / steps for op, seconds in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network", choices=["cnn", "mlp", "resnet"])
    parser.add_argument("batch", type=int)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.batch, 784) if args.network == "mlp" else (args.batch, 1, 28, 28)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32), "labels": rng.integers(0, 10, args.batch)}
    for label, options in (("off", OFF), ("on", {})):
        x, labels, model, optimizer = build(args.network)
        with gn.config.options(**options):
            plan = gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=optimizer)
            for _ in range(3):
                plan.run(feeds)
            per_op = profile(plan, feeds, args.steps)
        heavy = sum(s for op, s in per_op.items() if op in HEAVY) * 1e3
        rest = sum(s for op, s in per_op.items() if op not in HEAVY) * 1e3
        slowest = sorted(per_op.items(), key=lambda item: -item[1])[:8]
        print(f"{label:>3}: {len(plan.plan.steps)} steps; conv/matmul/pool {heavy:.1f} ms; everything else "
              f"{rest:.1f} ms; slowest: " + ", ".join(f"{op} {s * 1e3:.2f}" for op, s in slowest))


if __name__ == "__main__":
    main()
