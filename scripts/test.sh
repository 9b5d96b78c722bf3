#!/usr/bin/env bash
# The test suite, after an idempotent set-up. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The CUDA kernel tests compile every generated kernel with NVRTC, which needs no GPU: CuPy's
# CUDA 12 wheel and NVIDIA's NVRTC wheel. Where a CuPy is installed already (a GPU machine's
# own), it is kept; where they cannot be installed, those tests skip and say why.
if ! .venv/bin/python -c "import cupy_backends.cuda.libs.nvrtc as n; n.getVersion()" >/dev/null 2>&1; then
  if ! .venv/bin/python -c "import cupy" >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q "cupy-cuda12x>=14,<15" "nvidia-cuda-nvrtc-cu12>=12,<13" >/dev/null 2>&1 || \
      echo "test: could not install cupy-cuda12x and nvidia-cuda-nvrtc-cu12; the NVRTC tests will skip" >&2
  fi
fi
exec .venv/bin/python -m pytest -q "$@"
