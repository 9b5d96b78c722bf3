"""The first training step as a new user meets it: import, build and one step in a fresh process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/cold_start.py --rounds 3

Every state starts child processes whose kernel caches live in a fresh temporary folder
(``GRAPHNET_CACHE_DIR``, ``NUMBA_CACHE_DIR``), with Python's bytecode written and read as a
user's Python does (pip writes it for installed packages; this machine's sessions set
PYTHONDONTWRITEBYTECODE, which alone costs 0.2-0.5 s a start, so the children unset it):

* cold: empty caches, so every kernel the step runs is compiled (numba's and graphnet's);
* prepared: caches filled by ``graphnet prepare`` (what scripts/setup.sh runs at install);
* warm: the second process after a cold one.

A child times ``import graphnet``, building the training plan (declaring the network and
``gn.compile``) and its first step, with the default settings (convolution algorithms timed at
a shape not seen before), and prints the loss: all runs must agree bit for bit. The table gives
the median over the rounds per state and phase.
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
NETWORKS = ("cnn", "resnet")
STATES = ("cold", "prepared", "warm")


def child(network: str) -> None:
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


def environment(cache: str) -> dict[str, str]:
    """This process's environment with the kernel caches in ``cache`` and bytecode written."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    env.update(GRAPHNET_CACHE_DIR=os.path.join(cache, "graphnet"), NUMBA_CACHE_DIR=os.path.join(cache, "numba"))
    return env


def measure(network: str, cache: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", network], env=environment(cache),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{network} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(cache: str) -> float:
    """Run ``graphnet prepare`` with its caches in ``cache``; its seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "graphnet.cli", "prepare"], env=environment(cache),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"graphnet prepare failed:\n{done.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=NETWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--no-prepare", action="store_true",
                        help="skip the prepared state (a graphnet without the prepare command)")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    results: dict[tuple[str, str], list[dict]] = {}
    prepare_seconds = []
    for _ in range(args.rounds):
        for network in NETWORKS:
            with tempfile.TemporaryDirectory(prefix="graphnet-cold-") as cache:
                results.setdefault((network, "cold"), []).append(measure(network, cache))
                results.setdefault((network, "warm"), []).append(measure(network, cache))
        if args.no_prepare:
            continue
        with tempfile.TemporaryDirectory(prefix="graphnet-prepared-") as cache:
            prepare_seconds.append(prepare(cache))
            for network in NETWORKS:
                results.setdefault((network, "prepared"), []).append(measure(network, cache))
    for network in NETWORKS:
        losses = {r["loss"] for (net, _), runs in results.items() if net == network for r in runs}
        if len(losses) != 1:
            raise SystemExit(f"{network}: the runs' losses differ ({sorted(losses)}): results are not "
                             f"reproducible across processes")
    print(f"median of {args.rounds} rounds, seconds (every run's loss bit-identical); graphnet prepare took "
          + (f"{statistics.median(prepare_seconds):.1f} s" if prepare_seconds else "-"))
    print(f"{'network':<8} {'caches':<8} {'import':>7} {'build':>7} {'step':>7} {'total':>7}")
    for (network, kind), runs in sorted(results.items(), key=lambda item: (item[0][0], STATES.index(item[0][1]))):
        row = [statistics.median(r[k] for r in runs) for k in ("import_s", "build_s", "step_s", "total_s")]
        print(f"{network:<8} {kind:<8} " + " ".join(f"{v:7.2f}" for v in row))


if __name__ == "__main__":
    main()
