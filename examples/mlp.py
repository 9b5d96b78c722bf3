"""A multilayer perceptron 784-512-512-10 with Adam on (Fashion-)MNIST.

    python examples/mlp.py --epochs 3
"""

from __future__ import annotations

import graphnet as gn
from _common import parser, run


def mlp() -> gn.nn.Module:
    return gn.nn.Sequential(gn.nn.Flatten(), gn.nn.Linear(784, 512), gn.nn.ReLU(), gn.nn.Linear(512, 512),
                            gn.nn.ReLU(), gn.nn.Linear(512, 10))


def main() -> None:
    args = parser(__doc__.splitlines()[0], optimizer="adam", lr=1e-3, batch_size=128, epochs=3).parse_args()
    gn.manual_seed(args.seed)
    run(args, mlp(), "mlp")


if __name__ == "__main__":
    main()
