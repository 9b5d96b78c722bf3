"""The NumPy backend: ``executor.py`` (the runtime), ``kernel_table.py`` (which kernel runs each
op, and when), ``workspace.py`` (what those kernels hold besides their results: the peak-memory
model), ``fused_kernels.py`` (numba loops generated for fused groups)."""
