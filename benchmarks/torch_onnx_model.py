"""Export a small PyTorch CNN with ``torch.onnx.export`` for tests/test_onnx.py (run once; the
test reads the committed files, since PyTorch is never a dependency):

    .venv-torch/bin/python benchmarks/torch_onnx_model.py

writes tests/data/torch_cnn.onnx (conv with bias and padding, batch norm in eval mode, ReLU,
max pool, average pool, flatten, linear, log-softmax; a dynamic batch axis) and
tests/data/torch_cnn_io.npz (an input batch and PyTorch's output for it).
"""

from __future__ import annotations

import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "tests", "data")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 6, 3, stride=2)
        self.head = torch.nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        h = torch.relu(self.norm(self.conv(x)))
        h = torch.nn.functional.max_pool2d(h, 2)
        h = torch.nn.functional.avg_pool2d(torch.relu(self.conv2(h)), 1)
        return torch.log_softmax(self.head(torch.flatten(h, 1)), dim=1)


def main() -> None:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # running statistics that are not the initial ones
        net.norm.running_mean.uniform_(-0.5, 0.5)
        net.norm.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.randn(3, 1, 12, 12)
    path = os.path.join(OUT, "torch_cnn.onnx")
    torch.onnx.export(net, (x,), path, input_names=["image"], output_names=["log_probs"],
                      dynamic_axes={"image": {0: "batch"}, "log_probs": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    with torch.no_grad():
        y = net(x).numpy()
    np.savez(os.path.join(OUT, "torch_cnn_io.npz"), image=x.numpy(), log_probs=y)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
