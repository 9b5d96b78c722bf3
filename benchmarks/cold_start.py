"""The first training step as a new user meets it: import, build and one step in a fresh process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/cold_start.py --rounds 3

Each round makes an empty kernel cache (``GRAPHNET_CACHE_DIR`` and ``NUMBA_CACHE_DIR`` point
into a fresh temporary folder), then starts a child process per network twice: the first
finds the caches empty ("cold": every kernel it runs is compiled), the second finds what the
first left ("warm"). A child times ``import graphnet``, building the training plan
(declaring the network and ``gn.compile``), and its first step, and prints the loss so the
two runs can be compared bit for bit. The table gives the median of the rounds per phase.
Convolution algorithms are chosen by the cost rule (``GRAPHNET_AUTOTUNE=0``) so that the
timing of candidates does not count as start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NETWORKS = ("cnn", "resnet")


def child(network: str) -> None:
    import time

    start = time.perf_counter()
    import numpy as np

    import graphnet as gn
    imported = time.perf_counter()
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from mnist_cnn import seed_cnn
    from resnet import ResNet

    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 1, 28, 28))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    model, optimizer, batch = ((seed_cnn(), gn.optim.RMSprop(lr=1e-3), 64) if network == "cnn"
                               else (ResNet(), gn.optim.Adam(lr=3e-3), 128))
    train = gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=optimizer, seed=0)
    built = time.perf_counter()
    rng = np.random.default_rng(0)
    loss = train.run(x=rng.standard_normal((batch, 1, 28, 28)).astype(np.float32),
                     labels=rng.integers(0, 10, batch))["loss"]
    stepped = time.perf_counter()
    print(json.dumps({"import_s": imported - start, "build_s": built - imported, "step_s": stepped - built,
                      "total_s": stepped - start, "loss": float(loss).hex()}))


def measure(network: str, cache: str) -> dict:
    env = dict(os.environ, GRAPHNET_CACHE_DIR=os.path.join(cache, "graphnet"),
               NUMBA_CACHE_DIR=os.path.join(cache, "numba"), GRAPHNET_AUTOTUNE="0")
    done = subprocess.run([sys.executable, __file__, "--child", network], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{network} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=NETWORKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    results: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="graphnet-cold-") as cache:
            for network in NETWORKS:
                cold, warm = measure(network, cache), measure(network, cache)
                if cold["loss"] != warm["loss"]:
                    raise SystemExit(f"{network}: the cold and warm runs' losses differ ({cold['loss']} vs "
                                     f"{warm['loss']}): results are not reproducible across processes")
                results.setdefault((network, "cold"), []).append(cold)
                results.setdefault((network, "warm"), []).append(warm)
    print(f"median of {args.rounds} rounds, seconds (losses bit-identical cold and warm)")
    print(f"{'network':<8} {'caches':<6} {'import':>7} {'build':>7} {'step':>7} {'total':>7}")
    for (network, kind), runs in results.items():
        row = [statistics.median(r[k] for r in runs) for k in ("import_s", "build_s", "step_s", "total_s")]
        print(f"{network:<8} {kind:<6} " + " ".join(f"{v:7.2f}" for v in row))


if __name__ == "__main__":
    main()
