#!/usr/bin/env bash
# Runs the training-step benchmark, every side in its own process and interpreter:
# graphnet with .venv, PyTorch eager and torch.compile with .venv-torch, JAX with .venv-jax
# (a side whose virtualenv is missing is skipped). The BLAS settings these machines override
# are unset here and again for each child. Arguments go to benchmarks/train_step.py.
#
# The peers' virtualenvs (gitignored; never dependencies of graphnet):
#   python3 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.13.0 numpy
#   python3 -m venv .venv-jax && .venv-jax/bin/pip install "jax[cpu]" optax numpy
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" benchmarks/train_step.py "$@"
