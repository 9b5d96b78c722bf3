"""Kill saves mid-write and count what is lost: python scripts/kill_saves.py N

Starts a process that saves a plan over the same file in a loop, kills it with SIGKILL at a
random moment, and checks that the file still loads; N times. Prints the load failures
and the temporary files left behind before and after one later save (which removes those
of dead processes).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

import graphnet as gn

SAVER = textwrap.dedent("""
    import sys, graphnet as gn
    plan = gn.load(sys.argv[1])
    print("ready", flush=True)
    while True:
        plan.save(sys.argv[2])
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        gn.manual_seed(0)
        x = gn.placeholder("x", (None, 784))
        model = gn.nn.Sequential(gn.nn.Linear(784, 512), gn.nn.ReLU(), gn.nn.Linear(512, 10))  # a 1.6 MB file
        train = gn.compile(gn.mean(model(x) ** 2), optimizer=gn.optim.Adam(lr=1e-3))
        train.run(x=np.ones((2, 784), np.float32))
        source, target = os.path.join(folder, "source.gnp"), os.path.join(folder, "target.gnp")
        train.save(source)
        train.save(target)
        failures = 0
        left_behind = 0  # kills after which a temporary file lay in the folder
        start = time.perf_counter()
        for _ in range(args.count):
            proc = subprocess.Popen([sys.executable, "-c", SAVER, source, target], stdout=subprocess.PIPE, text=True)
            proc.stdout.readline()
            time.sleep(rng.uniform(0.0, 0.2))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            left_behind += any(n.endswith(".tmp") for n in os.listdir(folder))
            try:
                gn.load(target)  # also removes the temporaries of dead saves
            except gn.GraphnetError:
                failures += 1
        left = [n for n in os.listdir(folder) if n.endswith(".tmp")]
        gn.load(source).save(target)
        after = [n for n in os.listdir(folder) if n.endswith(".tmp")]
    print(f"{args.count} killed saves in {time.perf_counter() - start:.0f} s: {failures} load failures; "
          f"{left_behind} kills left a temporary file, removed by the next load or save; {len(left)} at the end, "
          f"{len(after)} after one more save")
    return 1 if failures or after else 0


if __name__ == "__main__":
    sys.exit(main())
