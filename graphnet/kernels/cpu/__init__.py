"""The CPU kernel library: numba loops and BLAS products over NumPy arrays.

``conv/`` (convolution algorithms, their compiled chunk loops, the chooser), ``pooling.py``,
``batch_norm.py``, ``losses.py`` (hand-written numba loops for ops whose reference kernels are
many whole-array passes), ``matmul.py`` (products split among threads), ``threads.py``,
``spin.py``, ``blas.py`` (graphnet's helper threads, their spin waits, OpenBLAS by address).
Kernels here know nothing of plans or executors: the NumPy backend's kernel table
(graphnet/backends/numpy/kernel_table.py) says which runs where.
"""
