"""A small residual CNN with BatchNorm on (Fashion-)MNIST: the DAG the seed's Sequential could not express.

A 3x3 stem at full resolution, then three stages of basic residual blocks with 16, 32 and
64 channels, each downsampling with stride 2 (28 -> 14 -> 7 -> 4) and a 1x1 projection on
the skip path, global average pooling and a linear head; Adam with a cosine schedule.
Downsampling in every stage keeps a step cheap enough for NumPy on two cores.

    python examples/resnet.py --epochs 3
"""

from __future__ import annotations

import graphnet as gn
from _common import parser, run


class BasicBlock(gn.nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the input (projected when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = gn.nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = gn.nn.BatchNorm2d(out_channels)
        self.conv2 = gn.nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = gn.nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = gn.nn.Sequential(gn.nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                             gn.nn.BatchNorm2d(out_channels))

    def forward(self, x: gn.Tensor) -> gn.Tensor:
        h = gn.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        skip = x if self.shortcut is None else self.shortcut(x)
        return gn.relu(h + skip)


class ResNet(gn.nn.Module):
    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        self.stem = gn.nn.Sequential(gn.nn.Conv2d(1, widths[0], 3, padding=1, bias=False),
                                     gn.nn.BatchNorm2d(widths[0]), gn.nn.ReLU())
        self.stage1 = BasicBlock(widths[0], widths[0], stride=2)
        self.stage2 = BasicBlock(widths[0], widths[1], stride=2)
        self.stage3 = BasicBlock(widths[1], widths[2], stride=2)
        self.pool = gn.nn.AvgPool2d(4)
        self.head = gn.nn.Linear(widths[2], num_classes)

    def forward(self, x: gn.Tensor) -> gn.Tensor:
        h = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.head(gn.flatten(self.pool(h)))


def main() -> None:
    args = parser(__doc__.splitlines()[0], optimizer="adam", lr=3e-3, batch_size=128, epochs=3).parse_args()
    gn.manual_seed(args.seed)
    run(args, ResNet(), "resnet",
        schedule=lambda opt: gn.optim.CosineAnnealingLR(opt, T_max=args.epochs))


if __name__ == "__main__":
    main()
