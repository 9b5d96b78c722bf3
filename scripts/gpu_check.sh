#!/usr/bin/env bash
# The one script to run on a GPU machine (the device tool's H100/H200, whose image has CuPy for
# CUDA 13, PyTorch and JAX): install graphnet beside the image's packages, run the whole suite
# (the CuPy cases included), train the main job for one epoch on the GPU, and time the GPU
# benchmark. Writes logs under ${OUT:-out/gpu}. About 5-8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
python3 -m venv --system-site-packages .venv-gpu
.venv-gpu/bin/python -m pip install -q -e ".[dev]" >"$OUT/install.log" 2>&1 || echo "install failed (see install.log)"
.venv-gpu/bin/python -c "import graphnet.backends.cupy.availability as a; print(a.describe())" | tee "$OUT/device.txt"
timeout 300 .venv-gpu/bin/python -m pytest -q -x tests/test_cupy_backend.py tests/test_cuda_codegen.py \
  -rs 2>&1 | tail -30 | tee "$OUT/gpu_tests.log"
timeout 240 .venv-gpu/bin/python -m pytest -q 2>&1 | tail -15 | tee "$OUT/suite.log"
timeout 180 .venv-gpu/bin/python examples/mnist_cnn.py --epochs 1 --executor cupy --no-progress --out "$OUT" \
  2>&1 | tail -15 | tee "$OUT/main_job.log"
timeout 240 .venv-gpu/bin/python benchmarks/gpu_step.py --warmup 5 --repeats 30 2>&1 | tee "$OUT/benchmark.log"
