"""Fork soak: children made by ``fork`` (multiprocessing's default on Linux) after training runs
of the seed CNN, half of them while another thread of the parent holds a second plan's locks
(as a run in progress does). Each child runs both inherited plans and one it compiles itself,
and must finish within its timeout with the right numbers; the parent goes on training.

Forking while another thread is inside an OpenBLAS call is left out: OpenBLAS's own fork
handler waits for that call and can deadlock the parent (not graphnet's to fix).

    .venv/bin/python scripts/fork_soak.py --forks 40

Exits 1 on a child that hangs or fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))

import graphnet as gn  # noqa: E402
from mnist_cnn import seed_cnn  # noqa: E402


def network(seed: int) -> gn.CompiledPlan:
    gn.manual_seed(seed)
    x = gn.placeholder("x", (None, 1, 28, 28))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    return gn.compile(gn.losses.cross_entropy(seed_cnn()(x), labels), optimizer=gn.optim.SGD(lr=0.01), seed=0)


def batch(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    return {"x": rng.standard_normal((64, 1, 28, 28)).astype(np.float32), "labels": rng.integers(0, 10, 64)}


def child(plan: gn.CompiledPlan, other: gn.CompiledPlan) -> None:
    try:
        losses = [float(plan.run(batch(1))["loss"]), float(other.run(batch(1))["loss"])]
        fresh, twin = network(5), network(5)
        a, b = fresh.run(batch(2))["loss"], twin.run(batch(2))["loss"]
        ok = bool(np.all(np.isfinite(losses))) and np.array_equal(a, b)
    except BaseException:  # noqa: BLE001 - any failure is the child's exit status
        os._exit(1)
    os._exit(0 if ok else 1)


def wait(pid: int, timeout: float) -> int | None:
    """The child's exit code, or None if it did not finish in time (it is killed then)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forks", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=60, help="seconds a child may take")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    gn.set_num_threads(2)
    plan = network(0)
    other = network(1)
    other.run(batch(0))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # another thread holding the second plan's locks, as a run in progress does
        locks = [other._lock, *(var.lock for var in other._ordered)]
        for lock in locks:
            lock.acquire()
        holding.set()
        release.wait()
        for lock in reversed(locks):
            lock.release()

    results = {"forks": 0, "while another thread held a plan's locks": 0, "hung": 0, "failed": 0}
    for k in range(args.forks):
        plan.run(batch(k))
        during = k % 2 == 1
        if during:
            holding.clear()
            release.clear()
            holder = threading.Thread(target=hold, daemon=True)
            holder.start()
            holding.wait()
        pid = os.fork()
        if pid == 0:
            child(plan, other)
        if during:
            release.set()
            holder.join()
        code = wait(pid, args.timeout)
        results["forks"] += 1
        results["while another thread held a plan's locks"] += during
        if code is None:
            results["hung"] += 1
        elif code != 0:
            results["failed"] += 1
        if args.verbose:
            print(f"fork {k}: {'locks held by another thread' if during else 'after a run'}: "
                  f"{'hung' if code is None else 'exit ' + str(code)}", flush=True)
    print("fork soak: " + ", ".join(f"{v} {k}" for k, v in results.items()))
    if results["hung"] or results["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
