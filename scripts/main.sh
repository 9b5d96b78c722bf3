#!/usr/bin/env bash
# The main job, after an idempotent set-up. Extra arguments go to the example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/seed_cnn_synthetic.py "$@"
