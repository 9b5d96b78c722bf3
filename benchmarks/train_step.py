"""Milliseconds per training step: graphnet's NumPy executor against PyTorch eager.

Times one full step (forward, backward, optimizer update) of
  * the seed post's CNN at batch 64 (RMSprop), as in examples/mnist_cnn.py,
  * an MLP 784-512-512-10 at batch 256 and at batch 128 (Adam; 128 is examples/mlp.py), and
  * the residual CNN of examples/resnet.py at batch 128 (Adam),
as the median over many steps after warm-up (a quarter as many for the ResNet), and
prints training images per second for each. Where PyTorch is importable, the same
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from mnist_cnn import seed_cnn  # noqa: E402 - the examples' own networks
from resnet import ResNet  # noqa: E402

#: (network, batch size), in the order printed.
CASES = (("cnn", 64), ("mlp", 256), ("mlp", 128), ("resnet", 128))
LABELS = {"cnn": "seed CNN", "mlp": "MLP 784-512-512-10", "resnet": "ResNet 16-32-64 + BN"}


def median_ms(step: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def mlp_gn() -> gn.nn.Module:
    return gn.nn.Sequential(gn.nn.Linear(784, 512), gn.nn.ReLU(), gn.nn.Linear(512, 512), gn.nn.ReLU(),
                            gn.nn.Linear(512, 10))


def graphnet_step(name: str, batch: int) -> Callable[[], object]:
    rng = np.random.default_rng(0)
    if name in ("cnn", "resnet"):
        x = gn.placeholder("x", (None, 1, 28, 28))
        model, optimizer = ((seed_cnn(), gn.optim.RMSprop(lr=1e-3)) if name == "cnn"
                            else (ResNet(), gn.optim.Adam(lr=3e-3)))
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
    elif name == "resnet":
        model = torch_resnet()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
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


def torch_resnet():
    """examples/resnet.py's network, layer for layer, in PyTorch."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                      nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return (self.body(x) + self.skip(x)).relu()

    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         Block(16, 16), Block(16, 32), Block(32, 64), nn.AvgPool2d(4), nn.Flatten(),
                         nn.Linear(64, 10))


def measure(side: str, threads: int, warmup: int, repeats: int) -> dict[str, float]:
    """Median ms per step for each network, on one side, in this process."""
    if side == "torch":
        import torch

        torch.set_num_threads(threads)
    make = graphnet_step if side == "graphnet" else torch_step
    return {f"{name}/{batch}": median_ms(make(name, batch), warmup if name != "resnet" else max(3, warmup // 4),
                                         repeats if name != "resnet" else max(5, repeats // 4))
            for name, batch in CASES}


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
    print(f"{'network':<32}{'graphnet ms':>12}{'torch ms':>10}{'ratio':>7}{'graphnet img/s':>16}{'torch img/s':>13}")
    for name, batch in CASES:
        key, label = f"{name}/{batch}", f"{LABELS[name]}, batch {batch}"
        ours = results["graphnet"][key]
        if "torch" in results:
            theirs = results["torch"][key]
            print(f"{label:<32}{ours:>12.2f}{theirs:>10.2f}{ours / theirs:>7.2f}"
                  f"{batch / ours * 1e3:>16,.0f}{batch / theirs * 1e3:>13,.0f}")
        else:
            print(f"{label:<32}{ours:>12.2f}{'-':>10}{'-':>7}{batch / ours * 1e3:>16,.0f}{'-':>13}")


if __name__ == "__main__":
    main()
