"""Generated CUDA source compiled to PTX with NVRTC, exactly as written (no preamble, no
include path). It needs no GPU, so CI compiles every generated kernel this way."""

from __future__ import annotations

from ...errors import ExecutorError
from .availability import import_nvrtc

#: architectures the tests compile every kernel for (Ampere and Hopper)
ARCHITECTURES = ("compute_80", "compute_90")
#: no fused multiply-add contraction: each member rounds as NumPy rounds it
OPTIONS = ("--std=c++17", "--fmad=false")


class KernelCompileError(ExecutorError):
    """NVRTC refused a generated kernel; the message holds its log."""


def compile_ptx(source: str, architecture: str = "compute_80", name: str = "kernel.cu") -> str:
    """The PTX of ``source`` for ``architecture``; KernelCompileError with NVRTC's log if it
    does not compile."""
    nvrtc = import_nvrtc()
    program = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(program, [f"--gpu-architecture={architecture}", *OPTIONS])
        except Exception as exc:
            log = nvrtc.getProgramLog(program)
            raise KernelCompileError(f"NVRTC could not compile {name} for {architecture}: {exc}\n{log}") from None
        ptx = nvrtc.getPTX(program)
    finally:
        nvrtc.destroyProgram(program)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


def version() -> tuple[int, int]:
    """NVRTC's (major, minor) version."""
    return tuple(import_nvrtc().getVersion())
