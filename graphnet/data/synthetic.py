"""Small deterministic synthetic datasets for quick runs and tests."""

from __future__ import annotations

import numpy as np


def pattern_images(n: int, num_classes: int = 10, size: int = 28, noise: float = 0.5,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images of ``num_classes`` smooth random patterns plus noise, with their labels.

    Returns images (n, 1, size, size) float32 and labels (n,) int64. The same seed gives
    the same data; the class patterns depend only on ``num_classes`` and ``size``.
    """
    pattern_rng = np.random.default_rng(12345 + num_classes * 1000 + size)
    coarse = pattern_rng.standard_normal((num_classes, 1, size // 4, size // 4))
    templates = np.kron(coarse, np.ones((1, 1, 4, 4)))[:, :, :size, :size]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    images = templates[labels] + noise * rng.standard_normal((n, 1, size, size))
    return images.astype(np.float32), labels.astype(np.int64)
