"""The shifted-columns convolution for the CPU: column matrices built from contiguous runs.

The per-image algorithm (``batched_gemm``) gathers every column row output row by output row:
for a 3x3 kernel on 14x14 images that is a loop of 14 values, restarted 14 times per tap and
channel, and its cost is in the loop, not the bytes. Here each chunk of images is first copied
once into its zero-padded *phases* (compiled_loops.phase_split: for stride s, the s*s
sub-grids of rows and columns that one tap reads, each ``(hq, wq)``), after which the column
row of tap (i, j) is one contiguous run of ``Ho * wq`` values at a fixed shift. The product
then covers ``wq`` output columns per row instead of ``Wo``: the extra ``wq - Wo`` (2 for a
3x3 kernel at stride 1) are computed and dropped, and the gradients feed zeros there.

Columns are laid out ``(groups, K, images, Ho * wq)``, so one chunk is one matrix product
per group whatever the number of images in it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .common import Workspace, _Geometry, _geometry, _result, _target, _weights, allocator, weight_result

#: images go through in chunks whose columns take about this many bytes (they stay in cache
#: between the copy and the product)
CHUNK_BYTES = 1024 * 1024


@functools.lru_cache(maxsize=1)
def _loops() -> dict[str, Callable[..., None]]:
    from . import loops as compiled_loops  # only plans with convolutions pay for importing numba

    return {name: getattr(compiled_loops, name)
            for name in ("phase_split", "phase_merge", "shifted_columns", "shifted_add")}


class Phases:
    """A convolution's phase grid: ``hq x wq`` per phase, ``length`` values per channel."""

    def __init__(self, geo: _Geometry) -> None:
        self.hq = -(-(geo.h + 2 * geo.ph) // geo.sh)
        self.wq = -(-(geo.w + 2 * geo.pw) // geo.sw)
        self.pq = geo.ho * self.wq  # columns per image
        self.length = geo.sh * geo.sw * self.hq * self.wq + (geo.kw - 1) * geo.dw // geo.sw
        self.args = (geo.kh, geo.kw, geo.sh, geo.sw, geo.dh, geo.dw, self.hq, self.wq)
        self.split_args = (geo.sh, geo.sw, geo.ph, geo.pw, self.hq, self.wq)


def chunk_images(geo: _Geometry, itemsize: int) -> int:
    """How many images one chunk takes."""
    per_image = geo.groups * geo.k * Phases(geo).pq * itemsize
    return max(1, min(geo.n, CHUNK_BYTES // max(per_image, 1)))


def _leading(buffer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The first values of a flat scratch buffer as a C-contiguous array of ``shape`` (a chunk
    with fewer images than the buffer was sized for stays contiguous)."""
    return buffer[:math.prod(shape)].reshape(shape)


class _Chunks:
    """A call's chunks of images and its flat scratch buffers (phases, columns, and one
    (O, images, Ho * wq) grid: the forward's product or the gradients' zero-padded g), each
    handed out per chunk as C-contiguous arrays of the chunk's size."""

    def __init__(self, geo: _Geometry, dtype: Any, workspace: Workspace | None) -> None:
        self.geo, self.grid = geo, Phases(geo)
        self.step = chunk_images(geo, np.dtype(dtype).itemsize)
        self.allocate = allocator(workspace)
        grid = self.grid
        self._phases = self.allocate((self.step * geo.c * grid.length,), dtype)
        self._cols = self.allocate((geo.groups * geo.k * self.step * grid.pq,), dtype)
        self._pixels = self.allocate((geo.o * self.step * grid.pq,), dtype)

    def spans(self) -> list[tuple[int, int]]:
        return [(start, min(start + self.step, self.geo.n)) for start in range(0, self.geo.n, self.step)]

    def phases(self, n: int) -> np.ndarray:
        return _leading(self._phases, (n, self.geo.c, self.grid.length))

    def columns(self, n: int) -> np.ndarray:
        return _leading(self._cols, (self.geo.groups * self.geo.k, n, self.grid.pq))

    def pixels(self, n: int) -> np.ndarray:
        return _leading(self._pixels, (self.geo.o, n, self.grid.pq))


def _columns(images: np.ndarray, phases: np.ndarray, columns: np.ndarray, geo: _Geometry, grid: Phases) -> None:
    """A chunk's column matrix (groups * K, n, Ho * wq) from its images, through its phases.
    The extra columns read real inputs (the next row's): they are zeroed, so that a
    non-finite input that no window reads reaches neither a result nor a warning."""
    loops = _loops()
    loops["phase_split"](images, phases, *grid.split_args)
    loops["shifted_columns"](phases, columns, *grid.args)
    if grid.wq > geo.wo:
        columns.reshape(-1, images.shape[0], geo.ho, grid.wq)[..., geo.wo:] = 0


def _fill_grid(grid: np.ndarray, g: np.ndarray, geo: _Geometry) -> np.ndarray:
    """``grid`` (G, Og, n, Ho, wq) holding ``g`` (n, O, Ho, Wo) and zeros in the extra columns;
    returned as (G, Og, n * Ho * wq)."""
    n = g.shape[0]
    view = grid.reshape(geo.o, n, geo.ho, -1)
    np.copyto(view[..., :geo.wo], g.transpose(1, 0, 2, 3))
    view[..., geo.wo:] = 0
    return grid.reshape(geo.groups, geo.og, -1)


def shifted_forward(x: np.ndarray, w: np.ndarray, *, out: np.ndarray | None = None,
                    workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    """conv2d: (N, C, H, W), (O, C/groups, kh, kw) -> (N, O, Ho, Wo)."""
    geo = _geometry(x.shape, w.shape, attrs)
    chunks = _Chunks(geo, x.dtype, workspace)
    grid = chunks.grid
    y = _target(out, (geo.n, geo.o, geo.ho, geo.wo), x.dtype)
    images, weights = np.ascontiguousarray(x), _weights(geo, w)
    for start, stop in chunks.spans():
        n = stop - start
        columns, result = chunks.columns(n), chunks.pixels(n)
        _columns(images[start:stop], chunks.phases(n), columns, geo, grid)
        np.matmul(weights, columns.reshape(geo.groups, geo.k, -1), out=result.reshape(geo.groups, geo.og, -1))
        np.copyto(y[start:stop], result.reshape(geo.o, n, geo.ho, grid.wq)[..., :geo.wo].transpose(1, 0, 2, 3))
    return _result(y, out, (geo.n, geo.o, geo.ho, geo.wo))


def shifted_grad_input(g: np.ndarray, w: np.ndarray, x: Any, *, out: np.ndarray | None = None,
                       workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    """conv2d's input gradient: (N, O, Ho, Wo), weight, x (read for its shape) -> (N, C, H, W)."""
    geo = _geometry(x.shape, w.shape, attrs)
    chunks, loops = _Chunks(geo, g.dtype, workspace), _loops()
    grid = chunks.grid
    dx = _target(out, (geo.n, geo.c, geo.h, geo.w), g.dtype)
    transposed = _weights(geo, w).transpose(0, 2, 1)  # (G, K, Og)
    for start, stop in chunks.spans():
        n = stop - start
        part, columns = chunks.phases(n), chunks.columns(n)
        gathered = _fill_grid(chunks.pixels(n), g[start:stop], geo)
        np.matmul(transposed, gathered, out=columns.reshape(geo.groups, geo.k, -1))
        loops["shifted_add"](columns, part, *grid.args)
        loops["phase_merge"](part, dx[start:stop], *grid.split_args)
    return _result(dx, out, (geo.n, geo.c, geo.h, geo.w))


def shifted_grad_weight(x: np.ndarray, g: np.ndarray, w: Any, *, out: np.ndarray | None = None,
                        workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    """conv2d's weight gradient, summed over chunks in float64: x, (N, O, Ho, Wo), weight (read
    for its shape) -> (O, C/groups, kh, kw)."""
    geo = _geometry(x.shape, w.shape, attrs)
    chunks = _Chunks(geo, x.dtype, workspace)
    images = np.ascontiguousarray(x)
    partial = chunks.allocate((geo.groups, geo.og, geo.k), g.dtype)
    total = chunks.allocate((geo.groups, geo.og, geo.k), np.float64)
    total.fill(0)
    for start, stop in chunks.spans():
        n = stop - start
        columns = chunks.columns(n)
        _columns(images[start:stop], chunks.phases(n), columns, geo, chunks.grid)
        gathered = _fill_grid(chunks.pixels(n), g[start:stop], geo)
        np.matmul(gathered, columns.reshape(geo.groups, geo.k, -1).transpose(0, 2, 1), out=partial)
        total += partial
    return weight_result(total.reshape(geo.o, geo.cg, geo.kh, geo.kw), out, g.dtype)
