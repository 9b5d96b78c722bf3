"""The seed post's demonstration: its CNN on (Fashion-)MNIST, then one prediction, pictured.

    python examples/mnist_cnn.py                      # Fashion-MNIST, 1 epoch, RMSprop 1e-3, batch 64
    python examples/mnist_cnn.py --epochs 3 --out out
    python examples/mnist_cnn.py --dataset mnist      # where MNIST is available

The network is the post's (Conv 1->10 k5, MaxPool 2, ReLU, Conv 10->20 k5, MaxPool 2, ReLU,
Flatten, Linear 320->120, ReLU, Linear 120->10), without its final ReLU on the logits,
which hurts learning.
"""

from __future__ import annotations

import graphnet as gn
from _common import parser, run


def seed_cnn() -> gn.nn.Module:
    return gn.nn.Sequential(
        gn.nn.Conv2d(1, 10, kernel_size=5), gn.nn.MaxPool2d(2, 2), gn.nn.ReLU(),
        gn.nn.Conv2d(10, 20, kernel_size=5), gn.nn.MaxPool2d(2, 2), gn.nn.ReLU(),
        gn.nn.Flatten(), gn.nn.Linear(320, 120), gn.nn.ReLU(), gn.nn.Linear(120, 10))


def main() -> None:
    args = parser(__doc__.splitlines()[0], optimizer="rmsprop", lr=1e-3, batch_size=64, epochs=1).parse_args()
    gn.manual_seed(args.seed)
    run(args, seed_cnn(), "mnist_cnn")


if __name__ == "__main__":
    main()
