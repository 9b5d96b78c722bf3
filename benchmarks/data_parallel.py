"""Data-parallel scaling on this machine: images per second of a training step with 1 process x 2
threads against 2 processes x 1 thread (mpiexec), the same global batch either way, and
how much communication each step costs and hides.

For the seed CNN (RMSprop) and the ResNet of examples/resnet.py (Adam), at the global batch
given (default 128, so 64 per process): the median step after warm-up. In the 2-process
run, each step's communication is measured: the wait inside the step (what the backward
pass did not hide, and any skew between the processes), the same buckets summed on their
own between barriers (what the communication costs when nothing else runs), the bytes per
step, and the step with every bucket summed where it starts (blocking): the overlap saves
the difference.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/data_parallel.py [--allreduce]

``--allreduce`` also times single allreduces of 8 B to 16 MB between the two processes and
fits latency and bandwidth: the numbers docs/distributed.md's scaling model starts from.
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
STRIPPED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def child(name: str, batch: int, warmup: int, repeats: int, parallel: bool) -> dict | None:
    import numpy as np

    import graphnet as gn

    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from mnist_cnn import seed_cnn
    from resnet import ResNet

    group = gn.distributed.init() if parallel else gn.distributed.current()
    local = batch // group.size
    gn.manual_seed(0)
    model, optimizer = (seed_cnn(), gn.optim.RMSprop(lr=1e-3)) if name == "cnn" else (ResNet(), gn.optim.Adam(lr=1e-3))
    x = gn.placeholder("x", (None, 1, 28, 28))
    y = gn.placeholder("y", (None,), dtype="int64")
    plan = gn.compile(gn.losses.cross_entropy(model(x), y), optimizer=optimizer, data_parallel=parallel)
    rng = np.random.default_rng(group.rank)
    xb = rng.standard_normal((local, 1, 28, 28)).astype(np.float32)
    yb = rng.integers(0, 10, local)
    for _ in range(warmup):
        plan.run(x=xb, y=yb)
    comm = group if parallel else None
    times, waits = [], []
    for _ in range(repeats):
        if comm is not None:
            comm.barrier()
            before = comm.wait_seconds
        start = time.perf_counter()
        plan.run(x=xb, y=yb)
        times.append(time.perf_counter() - start)
        if comm is not None:
            waits.append(comm.wait_seconds - before)
    result = {"ms": statistics.median(times) * 1e3}
    if comm is not None:
        # the same steps with every bucket summed at once where it starts (no overlap): what the
        # overlap saves is the difference in step time
        overlapped = (comm.start_allreduce, comm.wait)
        comm.start_allreduce = lambda array, what="": comm.allreduce(array, what)
        comm.wait = lambda array: None
        blocking = []
        for _ in range(repeats):
            comm.barrier()
            start = time.perf_counter()
            plan.run(x=xb, y=yb)
            blocking.append(time.perf_counter() - start)
        comm.start_allreduce, comm.wait = overlapped
        result["blocking_ms"] = statistics.median(blocking) * 1e3
        buckets = [np.zeros(int(np.prod(plan.plan.buffers[s.inputs[0]].shape)), np.float32)
                   for s in plan.plan.steps if s.op == "allreduce_start"]
        alone = []
        for _ in range(repeats):
            comm.barrier()
            start = time.perf_counter()
            for bucket in buckets:
                comm.start_allreduce(bucket, "benchmark")
            for bucket in buckets:
                comm.wait(bucket)
            alone.append(time.perf_counter() - start)
        result.update(exposed_ms=statistics.median(waits) * 1e3, comm_alone_ms=statistics.median(alone) * 1e3,
                      bytes=sum(b.nbytes for b in buckets), buckets=len(buckets))
        every = comm.allgather_object(result)
        if comm.rank != 0:
            return None
        result = {key: max(r[key] for r in every) for key in every[0]}  # the slower process sets the pace
    return result


def allreduce_child(repeats: int) -> dict | None:
    """Seconds per allreduce of 8 B to 16 MB between the processes (median), for the cost model."""
    import numpy as np

    import graphnet as gn

    comm = gn.distributed.init()
    sizes = [8 << k for k in range(0, 22, 3)] + [2 * 1024 * 1024]
    result = {}
    for size in sizes:
        array = np.zeros(size // 4, np.float32)
        times = []
        for _ in range(repeats):
            comm.barrier()
            start = time.perf_counter()
            comm.allreduce(array, "benchmark")
            times.append(time.perf_counter() - start)
        result[size] = statistics.median(times)
    if comm.rank != 0:
        return None
    # t = latency + bytes / bandwidth: the latency from the small messages, the bandwidth from 2 MB
    latency = statistics.median(result[s] for s in sizes if s <= 512)
    big = 2 * 1024 * 1024
    bandwidth = big / max(result[big] - latency, 1e-9)
    return {"seconds": result, "latency_us": latency * 1e6, "bandwidth_GBps": bandwidth / 1e9}


def run(name: str, batch: int, procs: int, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
    threads = str(2 // procs)
    env.update(GRAPHNET_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
    command = [sys.executable, __file__, "--child", name, str(batch), "--warmup", str(args.warmup),
               "--repeats", str(args.repeats)]
    if procs > 1:
        command = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(procs)] + command + ["--parallel"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="the global batch")
    parser.add_argument("--models", default="cnn,resnet")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--allreduce", action="store_true", help="also time allreduces of 8 B to 16 MB")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--parallel", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child and args.child[0] == "allreduce":
        result = allreduce_child(args.repeats)
        if result is not None:
            print(json.dumps(result))
        return
    if args.child:
        result = child(args.child[0], int(args.child[1]), args.warmup, args.repeats, args.parallel)
        if result is not None:
            print(json.dumps(result))
        return
    rows = {}
    if args.allreduce:
        cost = run("allreduce", 0, 2, args)
        print(f"allreduce between 2 processes: latency {cost['latency_us']:.1f} us, bandwidth "
              f"{cost['bandwidth_GBps']:.2f} GB/s; " + ", ".join(f"{int(k):,} B {v * 1e6:.1f} us"
                                                                   for k, v in cost["seconds"].items()))
        rows["allreduce"] = cost
    for name in [m for m in args.models.split(",") if m]:
        one, two = run(name, args.batch, 1, args), run(name, args.batch, 2, args)
        ips1, ips2 = args.batch / one["ms"] * 1e3, args.batch / two["ms"] * 1e3
        hidden = two["blocking_ms"] - two["ms"]
        rows[name] = {"1x2 ms": one["ms"], "2x1 ms": two["ms"], "1x2 img/s": ips1, "2x1 img/s": ips2,
                      "efficiency": ips2 / ips1, **{k: two[k] for k in ("exposed_ms", "comm_alone_ms", "bytes",
                                                                          "buckets")}, "hidden_ms": hidden}
        print(f"{name:<7} batch {args.batch}: 1 process x 2 threads {one['ms']:7.2f} ms ({ips1:7.0f} img/s)  "
              f"2 processes x 1 thread {two['ms']:7.2f} ms ({ips2:7.0f} img/s)  efficiency {ips2 / ips1:5.1%}  "
              f"| allreduce {two['bytes']:,} B in {two['buckets']} buckets: alone {two['comm_alone_ms']:.3f} ms, "
              f"waited in the step {two['exposed_ms']:.3f} ms; step with blocking sums {two['blocking_ms']:.2f} ms "
              f"(overlap saves {hidden:.3f} ms)", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
