"""Milliseconds per training step: graphnet's NumPy executor against PyTorch eager.

Times one full step (forward, backward, optimizer update) of
  * the seed post's CNN at batch 64 (RMSprop), and
  * an MLP 784-512-512-10 at batch 256 (Adam),
as the median over many steps after warm-up. Where PyTorch is importable, the same
networks run in PyTorch eager on the same number of threads and the ratio is printed.

Run through benchmarks/run.sh, which unsets OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for both sides.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import statistics
import time
from typing import Callable

import numpy as np

import graphnet as gn


def median_ms(step: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def seed_cnn_gn() -> gn.nn.Module:
    return gn.nn.Sequential(
        gn.nn.Conv2d(1, 10, kernel_size=5), gn.nn.MaxPool2d(2, 2), gn.nn.ReLU(),
        gn.nn.Conv2d(10, 20, kernel_size=5), gn.nn.MaxPool2d(2, 2), gn.nn.ReLU(),
        gn.nn.Flatten(), gn.nn.Linear(320, 120), gn.nn.ReLU(), gn.nn.Linear(120, 10))


def mlp_gn() -> gn.nn.Module:
    return gn.nn.Sequential(gn.nn.Linear(784, 512), gn.nn.ReLU(), gn.nn.Linear(512, 512), gn.nn.ReLU(),
                            gn.nn.Linear(512, 10))


def graphnet_step(name: str, batch: int) -> Callable[[], object]:
    rng = np.random.default_rng(0)
    if name == "cnn":
        x = gn.placeholder("x", (None, 1, 28, 28))
        model, optimizer = seed_cnn_gn(), gn.optim.RMSprop(lr=1e-3)
        xb = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    else:
        x = gn.placeholder("x", (None, 784))
        model, optimizer = mlp_gn(), gn.optim.Adam(lr=1e-3)
        xb = rng.standard_normal((batch, 784)).astype(np.float32)
    labels = gn.placeholder("labels", (None,), dtype="int64")
    train = gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=optimizer)
    yb = rng.integers(0, 10, batch)
    return lambda: train.run(x=xb, labels=yb)


def torch_step(name: str, batch: int) -> Callable[[], object]:
    import torch
    from torch import nn

    if name == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 10, 5), nn.MaxPool2d(2, 2), nn.ReLU(), nn.Conv2d(10, 20, 5),
                              nn.MaxPool2d(2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(320, 120), nn.ReLU(),
                              nn.Linear(120, 10))
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
        xb = torch.randn(batch, 1, 28, 28)
    else:
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        xb = torch.randn(batch, 784)
    yb = torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step() -> object:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    return step


def measure(side: str, threads: int, warmup: int, repeats: int) -> dict[str, float]:
    """Median ms per step for each network, on one side, in this process."""
    if side == "torch":
        import torch

        torch.set_num_threads(threads)
    make = graphnet_step if side == "graphnet" else torch_step
    return {name: median_ms(make(name, batch), warmup, repeats) for name, batch in (("cnn", 64), ("mlp", 256))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--side", choices=["graphnet", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass
    if args.side:  # a child process: print one JSON line
        print(json.dumps(measure(args.side, args.threads, args.warmup, args.repeats)))
        return
    # Each side runs in its own process: BLAS and OpenMP thread pools that spin after
    # work would otherwise steal the cores from the other side.
    results = {}
    for side in ("graphnet", "torch"):
        if side == "torch" and importlib.util.find_spec("torch") is None:
            continue
        cmd = [sys.executable, __file__, "--side", side, "--threads", str(args.threads),
               "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
        results[side] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    print(f"threads {args.threads}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
          f"median of {args.repeats} steps after {args.warmup} warm-up")
    print(f"{'network':<30}{'graphnet ms':>12}{'torch ms':>10}{'ratio':>8}")
    for name, label in (("cnn", "seed CNN, batch 64"), ("mlp", "MLP 784-512-512-10, batch 256")):
        ours = results["graphnet"][name]
        if "torch" in results:
            theirs = results["torch"][name]
            print(f"{label:<30}{ours:>12.2f}{theirs:>10.2f}{ours / theirs:>8.2f}")
        else:
            print(f"{label:<30}{ours:>12.2f}{'-':>10}{'-':>8}")


if __name__ == "__main__":
    main()
