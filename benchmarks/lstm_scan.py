"""The LSTM as one scan against the same LSTM unrolled in Python: plan size, compile time and
training-step time at several sequence lengths (median of many runs after warm-up).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/lstm_scan.py [--lengths 12 48 192]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import graphnet as gn


def _unrolled(lstm: gn.nn.LSTM, x: gn.Tensor, length: int) -> gn.Tensor:
    """The same single-layer LSTM written as a Python loop over the time steps."""
    size = lstm.hidden_size
    projected = x @ gn.transpose(lstm.weight_ih_l0) + lstm.bias_ih_l0
    w_hh_t = gn.transpose(lstm.weight_hh_l0)
    h = c = gn.broadcast_like(gn.constant(np.zeros(size, np.float32)), projected[0][:, :size])
    for t in range(length):
        gates = projected[t] + h @ w_hh_t + lstm.bias_hh_l0
        i, f, g, o = (gates[:, k * size:(k + 1) * size] for k in range(4))
        c = gn.sigmoid(f) * c + gn.sigmoid(i) * gn.tanh(g)
        h = gn.sigmoid(o) * gn.tanh(c)
    return h


def measure(length: int, scanned: bool, batch: int, hidden: int, repeats: int) -> dict[str, float]:
    gn.manual_seed(0)
    lstm = gn.nn.LSTM(32, hidden)
    head = gn.nn.Linear(hidden, 10)
    x = gn.placeholder("x", (length, None, 32))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    h = lstm(x)[1][0][0] if scanned else _unrolled(lstm, x, length)
    start = time.perf_counter()
    train = gn.compile(gn.losses.cross_entropy(head(h), labels), optimizer=gn.optim.Adam(lr=1e-3))
    compile_seconds = time.perf_counter() - start
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((length, batch, 32)).astype(np.float32), "labels": rng.integers(0, 10, batch)}
    for _ in range(3):
        train.run(**feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        train.run(**feeds)
        times.append(time.perf_counter() - start)
    return {"steps": len(train.plan.steps), "compile_s": compile_seconds, "ms_per_step": 1e3 * statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[12, 48, 192])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    measure(min(args.lengths), True, args.batch, args.hidden, 1)  # warm-up: the first compile loads the kernels
    print(f"{'T':>4} {'form':<9} {'plan steps':>10} {'compile s':>10} {'ms/step':>9}")
    for length in args.lengths:
        for scanned in (True, False):
            r = measure(length, scanned, args.batch, args.hidden, args.repeats)
            print(f"{length:>4} {'scan' if scanned else 'unrolled':<9} {r['steps']:>10} {r['compile_s']:>10.3f} "
                  f"{r['ms_per_step']:>9.2f}")


if __name__ == "__main__":
    main()
