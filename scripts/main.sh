#!/usr/bin/env bash
# The main job, after an idempotent set-up: the seed post's CNN trained on the real
# Fashion-MNIST (Debian's dataset-fashion-mnist, no download), its test accuracy, then
# its pictures in out/. Extra arguments go to examples/mnist_cnn.py (--epochs, --limit, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/mnist_cnn.py --epochs 3 --out out "$@"
