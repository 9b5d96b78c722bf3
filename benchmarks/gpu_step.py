"""Milliseconds per training step on an NVIDIA GPU: graphnet's CuPy backend against PyTorch CUDA
eager, torch.compile and torch.compile(mode="reduce-overhead").

The networks of benchmarks/train_step.py (the seed CNN with RMSprop, the MLP 784-512-512-10
with Adam, the ResNet of examples/resnet.py with Adam) at batch 256 and 1024, the median
over many steps after warm-up; each side in its own process (one interpreter may hold
both graphnet and torch: the GPU machine's image has both). A side that cannot run (no GPU,
no torch) is reported as skipped with its reason.

    python benchmarks/gpu_step.py [--cases cnn/256,mlp/1024] [--sides graphnet,torch]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CASES = ("cnn/256", "cnn/1024", "mlp/256", "mlp/1024", "resnet/256", "resnet/1024")
SIDES = ("graphnet", "torch", "torch-compile", "torch-reduce-overhead")


def graphnet_step(name: str, batch: int):
    import numpy as np

    import graphnet as gn

    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from mnist_cnn import seed_cnn
    from resnet import ResNet

    gn.manual_seed(0)
    rng = np.random.default_rng(0)
    if name == "mlp":
        x = gn.placeholder("x", (None, 784))
        model = gn.nn.Sequential(gn.nn.Linear(784, 512), gn.nn.ReLU(), gn.nn.Linear(512, 512), gn.nn.ReLU(),
                                 gn.nn.Linear(512, 10))
        xb = rng.standard_normal((batch, 784)).astype(np.float32)
    else:
        x = gn.placeholder("x", (None, 1, 28, 28))
        model = seed_cnn() if name == "cnn" else ResNet()
        xb = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    optimizer = gn.optim.RMSprop(lr=1e-3) if name == "cnn" else gn.optim.Adam(lr=1e-3)
    labels = gn.placeholder("labels", (None,), dtype="int64")
    plan = gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=optimizer, executor="cupy")
    yb = rng.integers(0, 10, batch)
    return lambda: plan.run(x=xb, labels=yb)["loss"]  # a host copy of the loss: the step has finished


def torch_step(name: str, batch: int, mode: str | None):
    import torch

    sys.path.insert(0, HERE)
    from peers import torch_model

    torch.manual_seed(0)
    model = torch_model(name).cuda()
    optimizer = (torch.optim.RMSprop(model.parameters(), lr=1e-3) if name == "cnn"
                 else torch.optim.Adam(model.parameters(), lr=1e-3, capturable=mode == "reduce-overhead"))
    xb = (torch.randn(batch, 784) if name == "mlp" else torch.randn(batch, 1, 28, 28)).cuda()
    yb = torch.randint(0, 10, (batch,)).cuda()
    loss_fn = torch.nn.CrossEntropyLoss()

    def forward(x, y):
        return loss_fn(model(x), y)

    update = optimizer.step
    if mode is not None:
        forward = torch.compile(forward, mode=mode)
        update = torch.compile(optimizer.step, mode=mode)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = forward(xb, yb)
        loss.backward()
        update()
        return loss.item()  # synchronises
    return step


def child(side: str, case: str, warmup: int, repeats: int) -> dict:
    name, batch = case.split("/")
    modes = {"torch": None, "torch-compile": "default", "torch-reduce-overhead": "reduce-overhead"}
    step = graphnet_step(name, int(batch)) if side == "graphnet" else torch_step(name, int(batch), modes[side])
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"ms": statistics.median(times) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.warmup, args.repeats)))
        return
    table = {}
    for case in args.cases.split(","):
        row = {}
        for side in args.sides.split(","):
            done = subprocess.run([sys.executable, __file__, "--child", side, case, "--warmup", str(args.warmup),
                                   "--repeats", str(args.repeats)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                row[side] = None
                print(f"{case} {side}: skipped ({done.stderr.strip().splitlines()[-1] if done.stderr else '?'})")
                continue
            row[side] = json.loads(done.stdout.strip().splitlines()[-1])["ms"]
        table[case] = row
        peers = [v for k, v in row.items() if k != "graphnet" and v is not None]
        ratio = f"{row['graphnet'] / min(peers):.2f}" if peers and row.get("graphnet") else "-"
        print(f"{case:<12} " + "  ".join(f"{k} {v:8.3f} ms" if v is not None else f"{k} -" for k, v in row.items())
              + f"  graphnet/best peer {ratio}", flush=True)
    print(json.dumps(table))


if __name__ == "__main__":
    main()
