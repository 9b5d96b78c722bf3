"""Batching NumPy arrays: ``DataLoader``, ``Normalize`` and ``to_float``."""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, Sequence

import numpy as np

from .errors import DatasetError


def to_float(images: np.ndarray, scale: bool | None = None) -> np.ndarray:
    """(N, H, W) images to (N, 1, H, W) float32; uint8 input is divided by 255 (into [0, 1]).

    ``scale`` forces (True) or suppresses (False) the division; by default it happens for
    integer input only. (N, C, H, W) input keeps its channels.
    """
    images = np.asarray(images)
    if scale is None:
        scale = images.dtype.kind in "ui"
    x = images.astype(np.float32)
    if scale:
        x *= np.float32(1.0 / 255.0)
    if x.ndim == 3:
        x = x[:, None, :, :]
    return x


class Normalize:
    """``(x - mean) / std`` as float32; ``mean``/``std`` are scalars or one value per channel (axis 1)."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        if np.any(self.std == 0):
            raise DatasetError(f"Normalize: std must be non-zero, got {std}")
        if self.mean.ndim == 1:
            self.mean = self.mean.reshape(-1, 1, 1)
        if self.std.ndim == 1:
            self.std = self.std.reshape(-1, 1, 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


_ITEM, _END, _ERROR = 0, 1, 2


class DataLoader:
    """Iterate over ``(x_batch, y_batch)`` pairs of NumPy arrays, one epoch per ``iter()``.

    Every sample is visited exactly once per epoch. With ``shuffle`` the order comes from a
    ``numpy.random.Generator`` seeded by ``seed`` that advances each epoch: epochs differ,
    runs with the same seed repeat. ``drop_last`` drops a final short batch. ``transform``
    maps each whole x batch (vectorised, e.g. ``Normalize``). ``prefetch`` prepares the next
    batch in one background thread (queue of one); it stops when the iteration is left
    early, and errors raised there are re-raised to the consumer.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int = 64, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False, prefetch: bool = False,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        if len(images) != len(labels):
            raise DatasetError(f"DataLoader: {len(images)} images but {len(labels)} labels")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise DatasetError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        self.images = images
        self.labels = labels
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.transform = transform
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> np.ndarray:
        n = len(self.labels)
        return self._rng.permutation(n) if self.shuffle else np.arange(n)

    def _batch(self, order: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        x, y = self.images[idx], self.labels[idx]
        if self.transform is not None:
            x = self.transform(x)
        return x, y

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self._order()  # drawn now, so each iter() is one epoch of the generator
        return self._prefetched(order) if self.prefetch else self._plain(order)

    def _plain(self, order: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for b in range(len(self)):
            yield self._batch(order, b)

    def _prefetched(self, order: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        slot: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    slot.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False

        def work() -> None:
            try:
                for b in range(len(self)):
                    if stop.is_set() or not put((_ITEM, self._batch(order, b))):
                        return
                put((_END, None))
            except BaseException as e:  # handed to the consumer
                put((_ERROR, e))

        thread = threading.Thread(target=work, name="graphnet-data-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                kind, item = slot.get()
                if kind == _END:
                    return
                if kind == _ERROR:
                    raise item
                yield item
        finally:
            stop.set()
            try:
                slot.get_nowait()
            except queue.Empty:
                pass
            thread.join()

    def __repr__(self) -> str:
        return (f"DataLoader(n={len(self.labels)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, prefetch={self.prefetch})")
