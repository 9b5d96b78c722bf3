"""What the CuPy backend needs, and a typed error naming what is missing.

CuPy ships one wheel per CUDA major version: ``cupy-cuda12x`` for a driver that supports
CUDA 12 (driver 525 or newer), ``cupy-cuda13x`` for CUDA 13 (driver 580 or newer).
``nvidia-smi`` prints the newest CUDA version the installed driver supports.
"""

from __future__ import annotations

import importlib
from typing import Any

from ...errors import ExecutorError

INSTALL_HINT = ("install the CuPy wheel for your driver: pip install 'graphnet[gpu-cuda12]' (cupy-cuda12x, CUDA 12 "
                "drivers) or 'graphnet[gpu-cuda13]' (cupy-cuda13x, CUDA 13 drivers); `nvidia-smi` shows which "
                "CUDA the driver has (docs/gpu.md)")


class CupyUnavailableError(ExecutorError):
    """The CuPy backend was asked for and cannot run here; the message says what is missing."""


class CupyMissingError(CupyUnavailableError):
    """CuPy is not installed (or does not import)."""


class GpuUnavailableError(CupyUnavailableError):
    """CuPy imports but finds no usable GPU (no device, no driver, or a driver too old for it)."""


class NvrtcUnavailableError(CupyUnavailableError):
    """NVIDIA's runtime compiler (NVRTC) cannot be loaded, so generated kernels cannot compile."""


def import_cupy() -> Any:
    """The ``cupy`` module, or CupyMissingError saying how to install it."""
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise CupyMissingError(f"the cupy executor needs CuPy, which is not installed ({exc}); "
                               f"{INSTALL_HINT}") from None


def require_gpu() -> Any:
    """The ``cupy`` module once a GPU is known to be usable; CupyMissingError or
    GpuUnavailableError (with CUDA's own reason) otherwise."""
    cupy = import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, driver too old for this wheel, ...
        raise GpuUnavailableError(f"CuPy {cupy.__version__} is installed but no GPU is usable: "
                                  f"{type(exc).__name__}: {exc}. {INSTALL_HINT}") from None
    if count < 1:
        raise GpuUnavailableError(f"CuPy {cupy.__version__} is installed but CUDA reports no GPU")
    return cupy


def import_nvrtc() -> Any:
    """CuPy's binding of NVRTC, with the library loaded (no GPU needed), or NvrtcUnavailableError."""
    import_cupy()
    try:
        nvrtc = importlib.import_module("cupy_backends.cuda.libs.nvrtc")
        nvrtc.getVersion()
    except Exception as exc:
        raise NvrtcUnavailableError(f"NVRTC does not load ({type(exc).__name__}: {exc}); install the "
                                    f"nvidia-cuda-nvrtc-cu12 wheel (or the CUDA toolkit) matching CuPy") from None
    return nvrtc


def describe() -> str:
    """One line on what this machine offers the CuPy backend (for reports and skip reasons)."""
    try:
        cupy = require_gpu()
    except CupyUnavailableError as exc:
        return str(exc)
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return f"CuPy {cupy.__version__} on {name.decode() if isinstance(name, bytes) else name}"
