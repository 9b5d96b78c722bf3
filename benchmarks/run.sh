#!/usr/bin/env bash
# Runs the training-step benchmark with the BLAS settings that these machines override
# unset for both sides; uses .venv-bench (with torch==2.13.0) when present.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x .venv-bench/bin/python ] && PY=.venv-bench/bin/python
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" benchmarks/train_step.py "$@"
