"""Inference side by side: graphnet's eval-mode plans against ONNX Runtime and PyTorch eager
(no_grad), the same threads (2) for every side, each side in its own process.

Rows: the seed CNN at batch 64 and the ResNet of examples/resnet.py (eval mode) at batch 128,
each as graphnet builds it, and the ResNet as graphnet imports it from the ONNX file
graphnet exported (``gn.onnx.load``). ONNX Runtime runs the exported file (all graph
optimisations on, as by default); PyTorch runs the same network layer for layer
(benchmarks/peers.py). The median over many calls after warm-up.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/onnx_inference.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ROWS = (("cnn", 64), ("resnet", 128), ("resnet-imported", 128))
STRIPPED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _graphnet_model(name: str):
    import graphnet as gn

    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from mnist_cnn import seed_cnn
    from resnet import ResNet

    gn.manual_seed(0)
    model = seed_cnn() if name == "cnn" else ResNet()
    model.eval()
    x = gn.placeholder("x", (None, 1, 28, 28))
    return gn.compile({"logits": model(x)})


def export(name: str, path: str) -> None:
    import graphnet as gn

    gn.onnx.export(_graphnet_model(name), path)


def timed(call, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def child(side: str, name: str, batch: int, path: str, warmup: int, repeats: int) -> float:
    import numpy as np

    x = np.random.default_rng(0).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    if side == "graphnet":
        import graphnet as gn

        plan = gn.compile(gn.onnx.load(path)) if name.endswith("imported") else _graphnet_model(name)
        return timed(lambda: plan.run(x=x), warmup, repeats)
    if side == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return timed(lambda: session.run(None, {"x": x}), warmup, repeats)
    import torch

    sys.path.insert(0, HERE)
    from peers import torch_model

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torch_model(name.split("-")[0]).eval()
    tx = torch.from_numpy(x)

    def call():
        with torch.no_grad():
            return model(tx)
    return timed(call, warmup, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, name, batch, path = args.child
        print(json.dumps({"ms": child(side, name, int(batch), path, args.warmup, args.repeats)}))
        return
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
    env.update(GRAPHNET_NUM_THREADS="2", OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    pythons = {"graphnet": os.path.join(ROOT, ".venv/bin/python"), "onnxruntime": os.path.join(ROOT, ".venv/bin/python"),
               "torch": os.path.join(ROOT, ".venv-torch/bin/python")}
    table = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, batch in ROWS:
            path = os.path.join(folder, f"{name.split('-')[0]}.onnx")
            if not os.path.exists(path):
                export(name.split("-")[0], path)
            row = {}
            for side, python in pythons.items():
                if side == "torch" and (name.endswith("imported") or not os.path.exists(python)):
                    continue
                done = subprocess.run([python, __file__, "--child", side, name, str(batch), path, "--warmup",
                                       str(args.warmup), "--repeats", str(args.repeats)], capture_output=True,
                                      text=True, env=env, cwd=ROOT, check=False)
                row[side] = json.loads(done.stdout.strip().splitlines()[-1])["ms"] if done.returncode == 0 else None
                if done.returncode != 0:
                    print(f"{name} {side}: {done.stderr.strip().splitlines()[-1] if done.stderr else '?'}")
            table[f"{name} b{batch}"] = row
            ratio = row["graphnet"] / row["onnxruntime"] if row.get("graphnet") and row.get("onnxruntime") else None
            print(f"{name + ' b' + str(batch):<22} " + "  ".join(f"{k} {v:7.2f} ms" for k, v in row.items() if v)
                  + (f"  graphnet / ONNX Runtime {ratio:.2f}" if ratio else ""), flush=True)
    print(json.dumps(table))


if __name__ == "__main__":
    main()
