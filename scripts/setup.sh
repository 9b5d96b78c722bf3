#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine with Python 3.10+: Debian packages the
# project uses (Graphviz's `dot`, the real Fashion-MNIST), a virtualenv, graphnet in it, and its
# kernels compiled into their caches (`graphnet prepare`).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dot >/dev/null 2>&1 || need+=(graphviz)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" || \
      echo "setup: could not install ${need[*]} with apt; the tests that need them will skip" >&2
  else
    echo "setup: no apt-get; install ${need[*]} by hand for the tests that need them" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.graphnet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[dev,viz,plot,mpi]"
  touch "$stamp"
fi

# Compile the CPU kernel library and the common fused loops into their caches now, so that a
# first training step does not (about 25 s, once; again after graphnet's sources change).
prepared=.venv/.graphnet-prepared
if [ ! -f "$prepared" ] || [ -n "$(find graphnet -name '*.py' -newer "$prepared" -print -quit)" ]; then
  if .venv/bin/graphnet prepare >/dev/null 2>&1; then
    touch "$prepared"
  else
    echo "setup: graphnet prepare failed; kernels will compile at their first use instead" >&2
  fi
fi
