"""The CuPy backend: the same plans on an NVIDIA GPU.

``availability.py`` (what is missing when the backend cannot run: CuPy, a GPU, NVRTC),
``nvrtc.py`` (compiling generated CUDA source to PTX, which needs no GPU: the tests compile
every generated kernel of the reference plans this way), ``fused_kernels.py`` (fused groups
as generated CUDA kernels, from graphnet.codegen.cuda), ``kernel_table.py`` (which kernel
runs each op) and ``executor.py`` (the runtime: device arrays, variables kept on the device
between runs). Nothing here imports CuPy until a plan asks for this backend.
"""
