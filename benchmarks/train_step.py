"""Milliseconds per training step: graphnet against PyTorch eager, torch.compile and JAX jit.

Times one full step (forward, backward, optimizer update) of
  * the seed post's CNN at batch 64 (RMSprop), as in examples/mnist_cnn.py,
  * an MLP 784-512-512-10 at batch 256 and at batch 128 (Adam; 128 is examples/mlp.py), and
  * the residual CNN of examples/resnet.py at batch 128 (Adam, batch norm in training mode),
as the median over many steps after warm-up (a quarter as many for the ResNet).

Every side runs in its own process with its own interpreter: graphnet with .venv, PyTorch
eager and torch.compile with .venv-torch, JAX (+optax) with .venv-jax (see benchmarks/peers.py;
a side whose interpreter is missing is skipped with a note). BLAS and OpenMP thread pools
that spin after work would otherwise steal the cores from the next side. Prints ms per step
per side, the best peer and graphnet's ratio to it, and the number of steps in graphnet's
compiled training plan; then the MLP b256 step's GFLOP/s against numpy's own GEMM peak
measured in the same process, and the share of its matrix products alone (timed op by op
inside the step); --first-call also times building the ResNet's step plus its first
call in a fresh process per side (torch.compile takes tens of seconds there); --json prints
everything as one JSON object; --check prints each side's loss over a few steps.

    bash benchmarks/run.sh                              # all sides, 2 threads
    bash benchmarks/run.sh --warmup 2 --repeats 5 --first-call --sides graphnet,jax

The parent needs only the standard library. Run through benchmarks/run.sh, which unsets
OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE; they are stripped from every child's environment too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: (network, batch size), in the order printed.
CASES = (("cnn", 64), ("mlp", 256), ("mlp", 128), ("resnet", 128))
LABELS = {"cnn": "seed CNN", "mlp": "MLP 784-512-512-10", "resnet": "ResNet 16-32-64 + BN"}
#: Each side and the interpreter it runs with, relative to the repository root.
SIDES = {"graphnet": ".venv/bin/python", "torch": ".venv-torch/bin/python",
         "torch-compile": ".venv-torch/bin/python", "jax": ".venv-jax/bin/python"}
PEERS = ("torch", "torch-compile", "jax")
#: Set on these machines, and unset for every side.
STRIPPED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
FIRST_CALL_CASE = ("resnet", 128)


def median_ms(step: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


# --- graphnet's side (imports graphnet only when it runs) ----------------------------------


def graphnet_step(name: str, batch: int, steps: dict[str, int] | None = None,
                  predicted: dict[str, int] | None = None, held: dict | None = None,
                  per_op: dict | None = None) -> Callable[[], object]:
    import numpy as np

    import graphnet as gn

    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from mnist_cnn import seed_cnn  # the examples' own networks
    from resnet import ResNet

    gn.manual_seed(0)
    rng = np.random.default_rng(0)
    if name in ("cnn", "resnet"):
        x = gn.placeholder("x", (None, 1, 28, 28))
        model, optimizer = ((seed_cnn(), gn.optim.RMSprop(lr=1e-3)) if name == "cnn"
                            else (ResNet(), gn.optim.Adam(lr=3e-3)))
        xb = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    else:
        x = gn.placeholder("x", (None, 784))
        model = gn.nn.Sequential(gn.nn.Linear(784, 512), gn.nn.ReLU(), gn.nn.Linear(512, 512), gn.nn.ReLU(),
                                 gn.nn.Linear(512, 10))
        optimizer = gn.optim.Adam(lr=1e-3)
        xb = rng.standard_normal((batch, 784)).astype(np.float32)
    labels = gn.placeholder("labels", (None,), dtype="int64")
    train = gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=optimizer)
    if steps is not None:
        steps[f"{name}/{batch}"] = len(train.plan.steps)
    yb = rng.integers(0, 10, batch)
    state = sum(var.data.nbytes for var in train.variables.values()) + xb.nbytes + yb.nbytes
    if predicted is not None:  # the compile report's peak (storage blocks and temporaries) plus the state
        from graphnet.backends.numpy.executor import NumpyExecutor

        a, b = NumpyExecutor.peak_formula(train.plan)
        predicted[f"{name}/{batch}"] = a + b * batch + state
    if held is not None:  # variables, the batch, and what the executor keeps (arena, convolution workspace)
        held["bytes"] = lambda: state + train.executor.held_bytes()
    if per_op is not None:  # one step run step by step: seconds per op
        per_op["seconds"] = lambda: train.executor.time_steps({"x": xb, "labels": yb})

    def step() -> object:
        out = train.run(x=xb, labels=yb)
        return next(iter(out.values())) if isinstance(out, dict) else out

    return step


# --- one side, in a child process ----------------------------------------------------------


def setup(side: str, threads: int) -> None:
    if side == "graphnet":
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(threads)
        except ImportError:  # the child's environment already caps the BLAS/OpenMP pools
            pass
        import graphnet  # noqa: F401 - imported here so that --first-call counts it as import
    else:
        sys.path.insert(0, HERE)
        import peers

        peers.setup(side, threads)
        if side == "jax":
            import jax  # noqa: F401
            import optax  # noqa: F401


def make_step(side: str, name: str, batch: int, steps: dict[str, int] | None = None,
              predicted: dict[str, int] | None = None, held: dict | None = None) -> Callable[[], object]:
    if side == "graphnet":
        return graphnet_step(name, batch, steps, predicted, held)
    import peers

    return peers.make_step(side, name, batch)


#: FLOPs of one MLP 784-512-512-10 training step per example: forward and weight-gradient
#: products for every layer, input-gradient products for all but the first (x needs none)
MLP_LAYERS = ((784, 512), (512, 512), (512, 10))
MLP_FLOPS_PER_EXAMPLE = 2 * (2 * sum(i * o for i, o in MLP_LAYERS) + sum(i * o for i, o in MLP_LAYERS[1:]))


def gemm_peak(repeats: int = 30) -> dict[str, float]:
    """NumPy's own float32 matrix-product speed here, in GFLOP/s: large squares and the MLP's
    layer shapes at batch 256 (each a median over ``repeats`` products into a preallocated out)."""
    import numpy as np

    shapes = {"1024^3": (1024, 1024, 1024), "2048^3": (2048, 2048, 2048), "256x784x512": (256, 784, 512),
              "256x512x512": (256, 512, 512), "784x256x512": (784, 256, 512)}
    rng = np.random.default_rng(0)
    speeds = {}
    for label, (m, k, n) in shapes.items():
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        out = np.empty((m, n), np.float32)
        count = max(5, repeats // 8) if m >= 2048 else repeats
        ms = median_ms(lambda: np.matmul(a, b, out=out), 3, count)
        speeds[label] = 2 * m * k * n / (ms * 1e-3) / 1e9
    return speeds


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(side: str, case: str, threads: int) -> dict:
    """Peak bytes of tensors a steady-state training step holds: what it keeps between steps
    (parameters, optimizer state, the batch; graphnet also its storage blocks) plus the peak of
    what it allocates during the step. The latter is the resident high-water mark over a few
    steps (VmHWM, reset after warm-up) above the resident size between steps; the parent sets
    MALLOC_MMAP_THRESHOLD_ so that large arrays are mapped and given back when freed on both
    sides alike, so resident memory follows them. Libraries and compiled code are not counted."""
    name, batch = case.split("/")
    setup(side, threads)
    predicted: dict[str, int] = {}
    held: dict = {}
    if side == "graphnet":
        step = make_step(side, name, int(batch), predicted=predicted, held=held)
    else:
        import peers

        step = peers.make_step(side, name, int(batch), held=held)
    for _ in range(3):
        step()
    steady = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the high-water mark to the current resident size
    for _ in range(5):
        step()
    during = (_status_kib("VmHWM") - steady) * 1024
    kept = held["bytes"]()
    return {"peak_bytes": kept + during, "kept_bytes": kept, "during_bytes": during,
            "predicted_bytes": predicted.get(case)}


def child(side: str, task: str, threads: int, warmup: int, repeats: int) -> dict:
    start = time.perf_counter()
    setup(side, threads)
    if task == "first":  # build the ResNet's step and take one step, in this fresh process
        built = time.perf_counter()
        step = make_step(side, *FIRST_CALL_CASE)
        float(step())
        return {"import_s": built - start, "first_call_s": time.perf_counter() - built}
    if task == "check":  # the loss over a few steps on one fixed batch: it should fall
        losses = {}
        for name, batch in CASES:
            step = make_step(side, name, batch)
            losses[f"{name}/{batch}"] = [float(step()) for _ in range(5)]
        return losses
    ms: dict[str, float] = {}
    steps: dict[str, int] = {}
    for name, batch in CASES:
        step = make_step(side, name, batch, steps)
        quarter = name == "resnet"
        w = max(3, warmup // 4) if quarter else warmup
        if side == "torch-compile":
            w = max(w, 2)  # the first call compiles, the second may recompile
        ms[f"{name}/{batch}"] = median_ms(step, w, max(5, repeats // 4) if quarter else repeats)
    if side == "graphnet":  # numpy's GEMM speed in this same process, right after the steps
        return {"ms": ms, "steps": steps, "mlp_b256_products_ms": products_ms(repeats), "gemm_gflops": gemm_peak()}
    return {"ms": ms}


def products_ms(repeats: int) -> float:
    """The median ms the MLP's matrix products take inside one b256 step, run op by op."""
    import numpy as np

    per_op: dict = {}
    graphnet_step("mlp", 256, per_op=per_op)
    seconds = [per_op["seconds"]().get("matmul", 0.0) for _ in range(max(10, repeats))]
    return float(np.median(seconds[5:])) * 1e3


# --- the parent ----------------------------------------------------------------------------


def child_env(side: str, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env.setdefault(var, str(threads))
    if side == "jax":
        # XLA's CPU pool follows the CPUs the process may use; peers.setup narrows its
        # affinity to `threads` CPUs before jax is imported.
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=true").strip()
        env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def run_side(side: str, task: str, args: argparse.Namespace, case: str | None = None) -> dict | None:
    python = os.path.join(ROOT, SIDES[side])
    if not os.access(python, os.X_OK):
        print(f"note: skipping {side}: no interpreter at {SIDES[side]}", file=sys.stderr)
        return None
    cmd = [python, os.path.abspath(__file__), "--side", side, "--task", task, "--threads", str(args.threads),
           "--warmup", str(args.warmup), "--repeats", str(args.repeats)] + (["--case", case] if case else [])
    env = child_env(side, args.threads)
    if task == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # large arrays mapped, and unmapped when freed
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        tail = "\n  ".join(proc.stderr.strip().splitlines()[-5:])
        print(f"note: {side} ({task}) failed with exit code {proc.returncode}:\n  {tail}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--sides", default=",".join(SIDES),
                        help=f"comma-separated subset of {','.join(SIDES)} (default: all)")
    parser.add_argument("--first-call", action="store_true",
                        help="also time building the ResNet step plus its first call, in a fresh process per side")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every side this many times, in turn, and report the median of the rounds "
                             "(this machine's speed drifts between minutes)")
    parser.add_argument("--json", action="store_true", help="print all results as one JSON object")
    parser.add_argument("--check", action="store_true",
                        help="only print each side's loss over 5 steps on a fixed batch (it should fall)")
    parser.add_argument("--memory", action="store_true",
                        help="also measure each case's peak memory per training step, graphnet against "
                             "PyTorch eager, in a fresh process per case and side")
    parser.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=["time", "first", "check", "memory"], default="time",
                        help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # a child process: print one JSON line
        if args.task == "memory":
            print(json.dumps(memory_child(args.side, args.case, args.threads)))
        else:
            print(json.dumps(child(args.side, args.task, args.threads, args.warmup, args.repeats)))
        return
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        parser.error(f"unknown side(s) {unknown}; choose from {list(SIDES)}")

    if args.check:
        checks = {side: run_side(side, "check", args) for side in sides}
        if args.json:
            print(json.dumps({"loss": checks}))
            return
        for side, losses in checks.items():
            for key, values in (losses or {}).items():
                print(f"{side:<14}{key:<12}" + " ".join(f"{v:.4f}" for v in values))
        return

    rounds = [{side: r for side in sides if (r := run_side(side, "time", args)) is not None}
              for _ in range(max(1, args.rounds))]
    results = {}
    for side in rounds[0]:
        runs = [r[side] for r in rounds if side in r]
        results[side] = dict(runs[0], ms={key: statistics.median(run["ms"][key] for run in runs)
                                          for key in runs[0]["ms"]})
    first = {}
    if args.first_call:
        first = {side: r for side in sides if (r := run_side(side, "first", args)) is not None}
    memory: dict[str, dict[str, dict]] = {}
    if args.memory:
        for name, batch in CASES:
            key = f"{name}/{batch}"
            memory[key] = {side: r for side in ("graphnet", "torch") if side in sides
                           and (r := run_side(side, "memory", args, key)) is not None}
    gemm = results.get("graphnet", {}).get("gemm_gflops")
    mlp = None
    if gemm and "mlp/256" in results["graphnet"]["ms"]:
        gflops = MLP_FLOPS_PER_EXAMPLE * 256 / (results["graphnet"]["ms"]["mlp/256"] * 1e-3) / 1e9
        mlp = {"gflops": gflops, "peak_gflops": max(gemm.values()), "fraction_of_peak": gflops / max(gemm.values())}
        products = results["graphnet"].get("mlp_b256_products_ms")
        if products:
            mlp["products_ms"] = products
            mlp["products_fraction_of_peak"] = MLP_FLOPS_PER_EXAMPLE * 256 / (products * 1e-3) / 1e9 / max(gemm.values())

    table = {}
    for name, batch in CASES:
        key = f"{name}/{batch}"
        row = {side: results[side]["ms"][key] for side in results}
        peer_ms = {side: ms for side, ms in row.items() if side in PEERS}
        best = min(peer_ms, key=peer_ms.get) if peer_ms else None
        ours = row.get("graphnet")
        table[key] = {"ms": row, "best_peer": best,
                      "ratio": ours / peer_ms[best] if best and ours is not None else None,
                      "graphnet_steps": results.get("graphnet", {}).get("steps", {}).get(key)}

    if args.json:
        print(json.dumps({"threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
                          "sides": list(results), "cases": table, "first_call": first, "memory": memory,
                          "gemm_gflops": gemm, "mlp_b256_gemm": mlp}, indent=2))
        return

    print(f"threads {args.threads}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
          f"median of {args.repeats} steps after {args.warmup} warm-up (ResNet: a quarter)"
          f"{f', median of {args.rounds} rounds' if args.rounds > 1 else ''}; ms per step")
    shown = [s for s in SIDES if s in results]
    print(f"{'network':<32}" + "".join(f"{s:>15}" for s in shown) + f"{'best peer':>15}{'ratio':>7}{'gn steps':>10}")
    for name, batch in CASES:
        key = f"{name}/{batch}"
        t = table[key]
        print(f"{LABELS[name] + ', batch ' + str(batch):<32}" + "".join(f"{fmt(t['ms'][s]):>15}" for s in shown)
              + f"{t['best_peer'] or '-':>15}{fmt(t['ratio']):>7}{fmt(t['graphnet_steps'], 'd'):>10}")
    if mlp is not None:
        print(f"MLP b256: {MLP_FLOPS_PER_EXAMPLE * 256 / 1e9:.2f} GFLOP per step, {mlp['gflops']:.0f} GFLOP/s = "
              f"{100 * mlp['fraction_of_peak']:.0f}% of numpy's float32 GEMM peak measured in this run ("
              + ", ".join(f"{label} {v:.0f}" for label, v in gemm.items()) + " GFLOP/s)")
        if "products_ms" in mlp:
            print(f"  its matrix products alone, inside the step: {mlp['products_ms']:.2f} ms = "
                  f"{100 * mlp['products_fraction_of_peak']:.0f}% of that peak; everything else "
                  f"{results['graphnet']['ms']['mlp/256'] - mlp['products_ms']:.2f} ms")
    if memory:
        print("peak memory of tensors per training step, MiB: kept between steps + allocated during one "
              "(kept in brackets); graphnet's prediction from its compile report:")
        print(f"{'network':<32}{'graphnet':>18}{'torch':>18}{'predicted':>11}{'ratio':>7}")
        mib = 1 / (1 << 20)
        for name, batch in CASES:
            row = memory[f"{name}/{batch}"]
            ours, theirs = row.get("graphnet"), row.get("torch")
            cells = [f"{r['peak_bytes'] * mib:.1f} ({r['kept_bytes'] * mib:.1f})" if r else "-"
                     for r in (ours, theirs)]
            predicted = f"{ours['predicted_bytes'] * mib:.1f}" if ours and ours.get("predicted_bytes") else "-"
            ratio = fmt(ours["peak_bytes"] / theirs["peak_bytes"]) if ours and theirs else "-"
            print(f"{LABELS[name] + ', batch ' + str(batch):<32}{cells[0]:>18}{cells[1]:>18}{predicted:>11}{ratio:>7}")
    if first:
        print(f"first call, {LABELS[FIRST_CALL_CASE[0]]} at batch {FIRST_CALL_CASE[1]} in a fresh process "
              "(build/compile + one step; import separately):")
        for side, r in first.items():
            print(f"  {side:<15}{r['first_call_s']:>8.2f} s   (import {r['import_s']:.2f} s)")


if __name__ == "__main__":
    main()
