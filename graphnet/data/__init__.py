"""Datasets and loaders."""

from .synthetic import pattern_images  # noqa: F401
