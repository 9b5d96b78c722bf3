"""Fuzz the plan loader: python scripts/fuzz_plans.py N [--seed S] [--codegen numba]

Mutates three valid plan files structurally (JSON-aware edits) and byte-wise, loads each
mutant, runs those that load on a small feed, and prints the outcomes by kind and the
time taken. Every outcome must be 'refused', 'ran' or 'run refused'; anything else is a
bug and is listed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from plan_fuzz import fuzz  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--codegen", choices=["numpy", "numba"], default="numpy",
                        help="numba: also run mutants' fused groups as generated kernels (no audit then)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        counts, failures, seconds = fuzz(folder, args.count, args.seed,
                                         report=lambda n: print(f"  {n:,} mutants", file=sys.stderr),
                                         codegen=args.codegen)
    print(f"{args.count:,} mutants in {seconds:.1f} s ({seconds / max(args.count, 1) * 1e3:.2f} ms each)")
    for outcome, n in counts.most_common():
        print(f"  {outcome:<14} {n:>8,}")
    for line in failures[:50]:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
