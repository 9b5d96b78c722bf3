"""Datasets and loaders: IDX files, MNIST and Fashion-MNIST, batching, synthetic data."""

from .datasets import MNIST, FashionMNIST, download, find_root, search_dirs  # noqa: F401
from .errors import DatasetError  # noqa: F401
from .idx import read_idx, write_idx  # noqa: F401
from .loader import DataLoader, Normalize, to_float  # noqa: F401
from .synthetic import pattern_images  # noqa: F401

__all__ = ["pattern_images", "read_idx", "write_idx", "MNIST", "FashionMNIST", "DataLoader", "Normalize",
           "DatasetError", "find_root", "search_dirs", "download", "to_float"]
