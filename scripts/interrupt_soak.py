"""Interrupt soak: training runs of the seed CNN and an MLP while SIGINT arrives at random
moments, sent to the main thread, to a random other thread of the process (graphnet's helpers,
OpenBLAS's workers) or to the process. After every step each variable must be exactly its value
before the step or exactly the value an uninterrupted twin reaches; the run then goes on.

    .venv/bin/python scripts/interrupt_soak.py --runs 4 --steps 150

Prints the steps, the signals sent, the steps they cut short (no variable changed) and those
interrupted while writing their update (held back until the update was whole); exits 1 on
any mismatch, 2 on a hang (its own watchdog).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))

import graphnet as gn  # noqa: E402
from mnist_cnn import seed_cnn  # noqa: E402


def network(kind: str, seed: int) -> gn.CompiledPlan:
    gn.manual_seed(seed)
    labels = gn.placeholder("labels", (None,), dtype="int64")
    if kind == "cnn":
        x = gn.placeholder("x", (None, 1, 28, 28))
        model, optimizer = seed_cnn(), gn.optim.Adam(lr=1e-3)
    else:
        x = gn.placeholder("x", (None, 784))
        model = gn.nn.Sequential(gn.nn.Linear(784, 512), gn.nn.ReLU(), gn.nn.Linear(512, 10))
        optimizer = gn.optim.Adam(lr=1e-3)
    return gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=optimizer, seed=0)


def batch(kind: str, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    shape = (64, 1, 28, 28) if kind == "cnn" else (256, 784)
    return {"x": rng.standard_normal(shape).astype(np.float32), "labels": rng.integers(0, 10, shape[0])}


def state(plan: gn.CompiledPlan) -> dict[str, np.ndarray]:
    return {name: var.data.copy() for name, var in plan.variables.items()}


def threads_of_process() -> list[int]:
    """Native thread ids of every thread of this process (Python's and the libraries')."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{os.getpid()}/task")]
    except OSError:
        return []


def soak(kind: str, steps: int, seed: int) -> tuple[int, int]:
    plan, twin = network(kind, 0), network(kind, 0)
    main = threading.main_thread().ident
    sending, stop = threading.Event(), threading.Event()
    rng = random.Random(seed)
    landed = [0]

    def sender() -> None:
        while not stop.is_set():
            time.sleep(rng.uniform(0.0005, 0.012))
            if not sending.is_set():
                continue
            choice = rng.random()
            if choice < 0.4:
                signal.pthread_kill(main, signal.SIGINT)
            elif choice < 0.8 and threads_of_process():  # to another thread, by its native id
                try:
                    _tgkill(rng.choice(threads_of_process()))
                except OSError:  # the thread ended meanwhile
                    continue
            else:
                os.kill(os.getpid(), signal.SIGINT)
            landed[0] += 1

    threading.Thread(target=sender, daemon=True).start()
    cut = late = 0
    for step in range(steps):
        before = state(plan)
        try:
            sending.set()
            try:
                plan.run(batch(kind, step))
            finally:
                sending.clear()
                time.sleep(0.006)  # a signal already on its way lands here, not in the twin
        except KeyboardInterrupt:
            if plan.step_count == twin.step_count + 1:
                late += 1  # arrived while the update was written: held back until it was whole
            else:
                cut += 1
        if plan.step_count == twin.step_count + 1:
            twin.run(batch(kind, step))
            expected = state(twin)
        elif plan.step_count == twin.step_count:
            expected = before
        else:
            raise SystemExit(f"{kind} step {step}: the step counter moved by {plan.step_count - twin.step_count}")
        for name, value in state(plan).items():
            if not np.array_equal(value, expected[name]):
                raise SystemExit(f"{kind} step {step}: {name} is neither the old value nor the new one")
    stop.set()
    if not np.array_equal(plan.run(batch(kind, 10**6))["loss"], twin.run(batch(kind, 10**6))["loss"]):
        raise SystemExit(f"{kind}: the run after the soak differs from the twin's")
    return landed[0], cut, late


def _tgkill(tid: int) -> None:
    """SIGINT to one native thread of this process (tgkill through ctypes)."""
    import ctypes

    import platform

    number = {"x86_64": 234, "aarch64": 131}.get(platform.machine())  # SYS_tgkill
    if number is None:
        os.kill(os.getpid(), signal.SIGINT)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, os.getpid(), tid, int(signal.SIGINT)) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--timeout", type=float, default=1200, help="seconds before the watchdog fails the soak")
    args = parser.parse_args()
    threading.Timer(args.timeout, lambda: os._exit(2)).start()  # a hang is a failure too
    gn.set_num_threads(2)
    totals = {"steps": 0, "signals sent": 0, "steps cut short (old state)": 0,
              "steps interrupted after their update (new state)": 0}
    for run in range(args.runs):
        kind = "cnn" if run % 2 == 0 else "mlp"
        signals, cut, late = soak(kind, args.steps, seed=run)
        for key, value in zip(totals, (args.steps, signals, cut, late)):
            totals[key] += value
        print(f"run {run} ({kind}): {args.steps} steps, {signals} signals sent, {cut} steps cut short, "
              f"{late} interrupted after their update; every variable exact after every step")
    print("interrupt soak passed: " + ", ".join(f"{v} {k}" for k, v in totals.items()))
    os._exit(0)


if __name__ == "__main__":
    main()
