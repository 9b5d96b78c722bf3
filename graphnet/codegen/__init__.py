"""Backend-neutral code generation: what every kernel generator reads from a fused group.

``fused_body`` types and lays out a fused group's expression graph (the dtype of each member,
the collapsed loop over the result, the reduction that ends a group); ``scalar`` renders one
member's scalar form (``OpDef.scalar``, an expression tree) into a language (Python/numba, C
for CUDA); ``cache`` says where generated kernels are kept. Backends (the NumPy backend's
numba loops, a CUDA backend's kernels) build on these and import nothing from each other.
"""
