"""Batching NumPy arrays: ``DataLoader``, ``Normalize`` and ``to_float``."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, Mapping, Sequence

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
    """Iterate over batches of equally long NumPy arrays, one epoch per ``iter()``.

    ``DataLoader(images, labels)`` gives ``(x_batch, y_batch)`` tuples; any number of arrays
    gives tuples of that many (``DataLoader(x)`` gives ``(x_batch,)``, as PyTorch's
    TensorDataset); one dict of arrays gives dicts of batches by the same keys (``fit`` and
    ``evaluate`` match tuples to a plan's feeds in order, dicts by name). A batch size may
    follow the arrays positionally (``DataLoader(x, y, 64)``).

    Every sample is visited exactly once per epoch. With ``shuffle`` the order comes from a
    ``numpy.random.Generator`` seeded by ``seed`` that advances each epoch: epochs differ,
    runs with the same seed repeat. ``drop_last`` drops a final short batch. ``transform``
    maps each whole batch of the first array (vectorised, e.g. ``Normalize``), or, for a
    dict, the whole dict of batches. ``prefetch`` prepares the next batch in one background
    thread (queue of one); it stops when the iteration is left early, and errors raised there
    are re-raised to the consumer.

    ``shard=(rank, size)`` (``gn.distributed.shard()``) gives one of ``size`` data-parallel
    processes its share: every process draws the same order (give them the same ``seed``),
    and global batch k, the order's samples ``k * size * batch_size`` onwards, is split into
    ``size`` consecutive parts, this process taking part ``rank``. So the processes' batches
    put together are the batches of one process with ``batch_size * size``, and each sample
    is visited by exactly one process once per epoch. A last, short global batch is split as
    evenly as possible; one with fewer samples than processes is dropped, since every process
    must run the same number of steps.
    """

    def __init__(self, *arrays: Any, batch_size: int = 64, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False, prefetch: bool = False,
                 transform: Callable[[Any], Any] | None = None, shard: tuple[int, int] | None = None) -> None:
        items = list(arrays)
        if len(items) > 1 and isinstance(items[-1], (int, np.integer)) and not isinstance(items[-1], bool):
            batch_size = items.pop()  # DataLoader(x, y, 64)
        if len(items) == 1 and isinstance(items[0], (tuple, list)) and items[0] and \
                all(hasattr(a, "__len__") and not isinstance(a, (str, bytes)) for a in items[0]):
            items = list(items[0])  # DataLoader((x, y))
        self.keys: tuple[str, ...] | None = None
        if len(items) == 1 and isinstance(items[0], Mapping):
            self.keys = tuple(items[0])
            items = list(items[0].values())
        if not items:
            raise DatasetError("DataLoader: give the arrays to batch (images and labels, any tuple, or a dict)")
        names = self.keys or (("images", "labels") if len(items) == 2 else tuple(f"array {i}" for i in range(len(items))))
        for name, item in zip(names, items):
            if not hasattr(item, "__len__") or not hasattr(item, "__getitem__") or np.ndim(item) == 0:
                raise DatasetError(f"DataLoader: {name} is not an array of samples: {type(item).__name__}")
        lengths = {len(item) for item in items}
        if len(lengths) > 1:
            raise DatasetError("DataLoader: the arrays differ in length: " + ", ".join(
                f"{name} has {len(item)}" for name, item in zip(names, items)))
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise DatasetError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        self.arrays = tuple(items)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.transform = transform
        self.shard = _check_shard(shard)
        if self.shard[1] > 1 and shuffle and seed is None:
            raise DatasetError("DataLoader: a sharded loader that shuffles needs a seed, the same on every process "
                               "(else the processes' shares overlap)")
        self._rng = np.random.default_rng(seed)

    @property
    def images(self) -> Any:
        """The first array (the images of ``DataLoader(images, labels)``)."""
        return self.arrays[0]

    @property
    def labels(self) -> Any:
        """The last array (the labels of ``DataLoader(images, labels)``)."""
        return self.arrays[-1]

    @property
    def samples(self) -> int:
        return len(self.arrays[0])

    def __len__(self) -> int:
        rank, size = self.shard
        n, step = self.samples, self.batch_size * size
        full, rest = divmod(n, step)
        return full + (1 if rest and not self.drop_last and rest >= size else 0)

    def _indices(self, order: np.ndarray, b: int) -> np.ndarray:
        """This process's part of global batch ``b`` of ``order``."""
        rank, size = self.shard
        chunk = order[b * self.batch_size * size:(b + 1) * self.batch_size * size]
        if size == 1:
            return chunk
        if len(chunk) == self.batch_size * size:
            return chunk[rank * self.batch_size:(rank + 1) * self.batch_size]
        bounds = [len(chunk) * r // size for r in range(size + 1)]  # a short last batch, split evenly
        return chunk[bounds[rank]:bounds[rank + 1]]

    def _order(self) -> np.ndarray:
        n = self.samples
        return self._rng.permutation(n) if self.shuffle else np.arange(n)

    def _batch(self, order: np.ndarray, b: int) -> Any:
        idx = self._indices(order, b)
        parts = [array[idx] for array in self.arrays]
        if self.keys is not None:
            batch = dict(zip(self.keys, parts))
            return self.transform(batch) if self.transform is not None else batch
        if self.transform is not None:
            parts[0] = self.transform(parts[0])
        return tuple(parts)

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
        shard = f", shard={self.shard}" if self.shard[1] > 1 else ""
        return (f"DataLoader(n={self.samples}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, prefetch={self.prefetch}{shard})")


def _check_shard(shard: Any) -> tuple[int, int]:
    if shard is None:
        return 0, 1
    ok = isinstance(shard, (tuple, list)) and len(shard) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shard)
    if not ok or not 0 <= shard[0] < shard[1]:
        raise DatasetError(f"DataLoader: shard must be (rank, size) with 0 <= rank < size, got {shard!r}")
    return int(shard[0]), int(shard[1])
