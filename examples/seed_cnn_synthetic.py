"""The seed post's CNN, declared and compiled with graphnet, trained on a synthetic task.

Run: python examples/seed_cnn_synthetic.py [--steps 60] [--batch-size 64]
(The real-data demonstration on Fashion-MNIST is examples/mnist_cnn.py.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import graphnet as gn
from mnist_cnn import seed_cnn  # the same network as the real-data demonstration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    gn.manual_seed(args.seed)
    images, labels = gn.data.pattern_images(args.steps * args.batch_size + 1000, seed=args.seed)
    test_x, test_y = images[-1000:], labels[-1000:]

    x = gn.placeholder("x", (None, 1, 28, 28))
    y = gn.placeholder("labels", (None,), dtype="int64")
    model = seed_cnn()
    logits = model(x)
    loss = gn.losses.cross_entropy(logits, y)
    train = gn.compile(loss, optimizer=gn.optim.RMSprop(lr=args.lr))
    infer = gn.compile(logits)
    print(model)
    print("compile passes:\n  " + "\n  ".join(str(r) for r in train.report))

    start = time.perf_counter()
    for step in range(args.steps):
        sl = slice(step * args.batch_size, (step + 1) * args.batch_size)
        out = train.run(x=images[sl], labels=labels[sl])
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {float(out['loss']):.4f}")
    elapsed = time.perf_counter() - start
    predictions = infer.run(x=test_x)["logits"].argmax(axis=1)
    print(f"{args.steps * args.batch_size / elapsed:.0f} images/s; "
          f"held-out accuracy {np.mean(predictions == test_y):.3f}; "
          f"first test image predicted {predictions[0]} (label {test_y[0]})")


if __name__ == "__main__":
    main()
