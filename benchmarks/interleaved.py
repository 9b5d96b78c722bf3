"""Training-step time against the peers, with the sides interleaved in short bursts.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/interleaved.py --rounds 15

This machine's speed drifts by up to 2x over minutes, and benchmarks/train_step.py runs each
side's cases in one process after another: a slow phase can land on one side only. Here every
side (graphnet, PyTorch eager, torch.compile, JAX jit; the same steps as train_step.py, each
in its own process and virtualenv) is started once, builds and warms up all four cases, and
then waits. The parent asks each side in turn for a short burst of steps of one case (the
order rotating every round), with a pause before each burst so that the previous side's
thread pools stop spinning. Each round's ratio compares bursts taken seconds apart; the
table gives each side's median burst and the median, lowest and highest per-round ratio of
graphnet to the best peer of that round.

The parent needs only the standard library.
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
sys.path.insert(0, HERE)
import train_step  # noqa: E402 - the sides' steps, interpreters and environments

#: steps per burst, per network (a burst takes a fraction of a second)
BURST = {"cnn": 20, "mlp": 20, "resnet": 4}


def serve(side: str, threads: int, warmup: int) -> None:
    """A side's process: build every case, warm it up, then run bursts on request (one
    ``case reps`` line in, one JSON line out; ``quit`` ends it)."""
    train_step.setup(side, threads)
    steps = {}
    for name, batch in train_step.CASES:
        step = train_step.make_step(side, name, batch)
        for _ in range(max(2, warmup // 4 if name == "resnet" else warmup)):
            step()
        steps[f"{name}/{batch}"] = step
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            return
        step, reps = steps[words[0]], int(words[1])
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        print(json.dumps({"ms": statistics.median(times) * 1e3}), flush=True)


def start(side: str, args: argparse.Namespace) -> subprocess.Popen | None:
    python = os.path.join(train_step.ROOT, train_step.SIDES[side])
    if not os.access(python, os.X_OK):
        print(f"note: skipping {side}: no interpreter at {train_step.SIDES[side]}", file=sys.stderr)
        return None
    cmd = [python, os.path.abspath(__file__), "--serve", side, "--threads", str(args.threads),
           "--warmup", str(args.warmup)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=train_step.child_env(side, args.threads), cwd=train_step.ROOT)
    ready = proc.stdout.readline()
    if not ready:
        print(f"note: {side} did not start (exit code {proc.wait()})", file=sys.stderr)
        return None
    return proc


def burst(proc: subprocess.Popen, case: str, reps: int) -> float:
    proc.stdin.write(f"{case} {reps}\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())["ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds of quiet before each burst")
    parser.add_argument("--sides", default=",".join(train_step.SIDES))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", choices=list(train_step.SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.threads, args.warmup)
        return
    procs = {}
    for side in (s.strip() for s in args.sides.split(",") if s.strip()):
        proc = start(side, args)  # one at a time: building and compiling stay out of each other's way
        if proc is not None:
            procs[side] = proc
    cases = [f"{name}/{batch}" for name, batch in train_step.CASES]
    ms: dict[str, dict[str, list[float]]] = {case: {side: [] for side in procs} for case in cases}
    try:
        order = list(procs)
        for round_index in range(args.rounds):
            turn = order[round_index % len(order):] + order[:round_index % len(order)]
            for case in cases:
                for side in turn:
                    time.sleep(args.pause)
                    ms[case][side].append(burst(procs[side], case, BURST[case.split("/")[0]]))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                proc.wait(timeout=60)
    table = {}
    for case in cases:
        peers = [side for side in procs if side in train_step.PEERS]
        ratios = [ms[case]["graphnet"][r] / min(ms[case][p][r] for p in peers)
                  for r in range(args.rounds)] if "graphnet" in procs and peers else []
        per_peer = {p: statistics.median(ms[case]["graphnet"][r] / ms[case][p][r] for r in range(args.rounds))
                    for p in peers} if "graphnet" in procs else {}
        table[case] = {"ms": {side: statistics.median(values) for side, values in ms[case].items()},
                       "ratio_to_each_peer": per_peer,
                       "ratio_median": statistics.median(ratios) if ratios else None,
                       "ratio_low": min(ratios) if ratios else None, "ratio_high": max(ratios) if ratios else None,
                       "rounds_at_or_below_1": sum(r <= 1.0 for r in ratios)}
    if args.json:
        print(json.dumps({"rounds": args.rounds, "bursts": BURST, "cases": table}, indent=2))
        return
    shown = list(procs)
    print(f"threads {args.threads}; {args.rounds} rounds of interleaved bursts "
          f"({', '.join(f'{k} {v} steps' for k, v in BURST.items())}), {args.pause} s quiet before each; "
          "median ms per burst; ratio = graphnet / best peer of the same round (median [lowest, highest]); "
          "then graphnet / each peer (median over rounds)")
    peers = [s for s in shown if s in train_step.PEERS]
    print(f"{'network':<32}" + "".join(f"{s:>15}" for s in shown) + f"{'ratio':>24}{'rounds <= 1':>13}"
          + "".join(f"{'/' + p:>15}" for p in peers))
    for case in cases:
        row = table[case]
        name, batch = case.split("/")
        ratio = (f"{row['ratio_median']:.2f} [{row['ratio_low']:.2f}, {row['ratio_high']:.2f}]"
                 if row["ratio_median"] is not None else "-")
        print(f"{train_step.LABELS[name] + ', batch ' + batch:<32}"
              + "".join(f"{row['ms'][s]:>15.2f}" for s in shown)
              + f"{ratio:>24}{row['rounds_at_or_below_1']:>8}/{args.rounds}"
              + "".join(f"{row['ratio_to_each_peer'].get(p, float('nan')):>15.2f}" for p in peers))


if __name__ == "__main__":
    main()
