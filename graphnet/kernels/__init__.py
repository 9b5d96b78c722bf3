"""Kernel libraries the backends draw on; ``cpu/`` is the NumPy backend's."""
