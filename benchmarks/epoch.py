"""One Fashion-MNIST epoch of the main job's CNN, graphnet against PyTorch eager, side by side.

The network, optimizer and batches of ``scripts/main.sh`` (the seed post's CNN, RMSprop 1e-3,
60,000 real Fashion-MNIST images in shuffled batches of 64): each side loads the IDX files
from /usr/share/datasets/fashion-mnist in its own process and interpreter, then times one
epoch of training, wall clock, and reports the test accuracy after it (not timed).

* graphnet: what the main job runs, ``gn.train.fit`` over a ``gn.data.DataLoader`` (shuffled,
  prefetching), with the training plan returning loss and logits, without the progress bar.
* PyTorch eager (.venv-torch): the same layers and initial weights' distribution, its fastest
  plain loop (a permutation, then each batch sliced from tensors in memory; ``DataLoader``
  over a ``TensorDataset`` collates sample by sample and is slower).

    bash benchmarks/run.sh is for training steps; this one runs as
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/epoch.py [--rounds 3]

The parent needs only the standard library; every child's environment drops the BLAS
settings these machines set (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time

from train_step import child_env  # benchmarks/ is this script's first import path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = "/usr/share/datasets/fashion-mnist"
SIDES = {"graphnet": ".venv/bin/python", "torch": ".venv-torch/bin/python"}
BATCH, LR = 64, 1e-3
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's training-set pixel statistics (graphnet's normalize=True)


def _idx(name: str):
    """An IDX file as a NumPy array (the peer's side has no graphnet to read it with)."""
    import numpy as np

    with gzip.open(os.path.join(DATA, name)) as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def graphnet_epoch(limit: int | None) -> dict:
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import graphnet as gn
    from mnist_cnn import seed_cnn

    gn.manual_seed(0)
    train, test = gn.data.FashionMNIST(split="train"), gn.data.FashionMNIST(split="test")
    x_train, y_train = train.as_float(normalize=True), train.labels
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    model = seed_cnn()
    x = gn.placeholder("x", (None, 1, 28, 28))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    logits = model(x)
    plan = gn.compile({"loss": gn.losses.cross_entropy(logits, labels), "logits": logits},
                      optimizer=gn.optim.RMSprop(lr=LR), seed=0)
    loader = gn.data.DataLoader(x_train, y_train, batch_size=BATCH, shuffle=True, seed=0, prefetch=True)
    start = time.perf_counter()
    history = gn.train.fit(plan, loader, epochs=1, progress=False, log=None)
    seconds = time.perf_counter() - start
    model.eval()
    eval_plan = gn.compile({"logits": model(x)})
    accuracy = gn.train.evaluate(eval_plan, gn.data.DataLoader(test.as_float(normalize=True), test.labels,
                                                                batch_size=1000))["accuracy"]
    return {"seconds": seconds, "images": len(x_train), "train_loss": history.train_loss[-1], "test_accuracy": accuracy}


def torch_epoch(limit: int | None) -> dict:
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    torch.manual_seed(0)

    def images(name: str):
        return torch.from_numpy(((_idx(name).astype(np.float32) / 255 - MEAN) / STD)[:, None])

    x_train = images("train-images-idx3-ubyte.gz")
    y_train = torch.from_numpy(_idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    model = nn.Sequential(nn.Conv2d(1, 10, 5), nn.MaxPool2d(2, 2), nn.ReLU(), nn.Conv2d(10, 20, 5),
                          nn.MaxPool2d(2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(320, 120), nn.ReLU(),
                          nn.Linear(120, 10))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    order = torch.randperm(len(x_train))
    total = 0.0
    for begin in range(0, len(x_train), BATCH):
        index = order[begin:begin + BATCH]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_train[index]), y_train[index])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)  # read every step, as fit reads graphnet's loss
    seconds = time.perf_counter() - start
    x_test = images("t10k-images-idx3-ubyte.gz")
    y_test = torch.from_numpy(_idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    return {"seconds": seconds, "images": len(x_train), "train_loss": total / len(x_train), "test_accuracy": accuracy}


def run_side(side: str, args: argparse.Namespace) -> dict | None:
    python = os.path.join(ROOT, SIDES[side])
    if not os.access(python, os.X_OK):
        print(f"note: skipping {side}: no interpreter at {SIDES[side]}", file=sys.stderr)
        return None
    env = child_env(side, args.threads)  # the BLAS settings dropped, the thread pools capped
    cmd = [python, os.path.abspath(__file__), "--side", side]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        tail = "\n  ".join(proc.stderr.strip().splitlines()[-5:])
        print(f"note: {side} failed with exit code {proc.returncode}:\n  {tail}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="epochs per side, alternating; the median is shown")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only (a quick look)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps((graphnet_epoch if args.side == "graphnet" else torch_epoch)(args.limit)))
        return
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for _ in range(max(1, args.rounds)):
        for side in SIDES:
            result = run_side(side, args)
            if result is not None:
                runs[side].append(result)
    if args.json:
        print(json.dumps(runs, indent=2))
        return
    print(f"one Fashion-MNIST epoch, seed CNN, RMSprop {LR}, batch {BATCH}, {args.threads} threads; "
          f"median of {max(1, args.rounds)} epoch(s) per side, each in a fresh process")
    print(f"{'side':<12}{'epoch s':>10}{'images/s':>12}{'train loss':>12}{'test acc':>10}   all epochs (s)")
    for side, results in runs.items():
        if not results:
            continue
        seconds = statistics.median(r["seconds"] for r in results)
        accuracy = statistics.median(r["test_accuracy"] for r in results)
        loss = statistics.median(r["train_loss"] for r in results)
        print(f"{side:<12}{seconds:>10.2f}{results[0]['images'] / seconds:>12,.0f}{loss:>12.4f}{accuracy:>10.4f}   "
              + " ".join(f"{r['seconds']:.2f}" for r in results))
    if runs["graphnet"] and runs["torch"]:
        ratio = statistics.median(r["seconds"] for r in runs["graphnet"]) / statistics.median(
            r["seconds"] for r in runs["torch"])
        print(f"graphnet / torch eager: {ratio:.2f}")


if __name__ == "__main__":
    main()
