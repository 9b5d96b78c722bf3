"""Data parallelism: every gradient averaged over the processes before the optimizer reads it.

Runs right after autodiff (before clipping, so the clipping norm is the global batch's). The
gradients are taken in reverse parameter order, the order the backward pass completes them
(the schedule visits the last layer's update first), and packed into buckets of about
``bucket_bytes``: each bucket is one flat array (``concat`` of the flattened gradients), an
``allreduce_start`` as soon as its last gradient exists and an ``allreduce_wait`` that the
schedule puts after the whole backward pass (graphnet.passes.schedule), so the sums travel
while the earlier layers' gradients are computed, as PyTorch DDP's buckets do. The averaged
gradients are views of the bucket (slice and reshape), so nothing is copied back.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph
from ..ops import concat, copy, reshape
from ..ops.collective import allreduce_start, allreduce_wait
from ..ops.registry import derived_from
from ..tensor import Tensor

#: ``bucket_bytes`` 0 (the default) sizes the buckets from the model: about ``TARGET_BUCKETS``
#: of them, none under ``MIN_BUCKET_BYTES``. Several buckets let the first sums start while
#: the backward pass still runs; each one also pays the allreduce's latency (tens of
#: microseconds between processes on one machine), so a few large ones beat many small ones.
DEFAULT_BUCKET_BYTES = 0
TARGET_BUCKETS = 8
MIN_BUCKET_BYTES = 64 * 1024


def buckets(sizes: list[tuple[int, str]], bucket_bytes: int) -> list[list[int]]:
    """Indices into ``sizes`` (elements, dtype) grouped into buckets of one dtype and at most
    ``bucket_bytes`` each (a larger gradient has a bucket of its own), in the given order."""
    groups: list[list[int]] = []
    held = 0
    for index, (count, dtype) in enumerate(sizes):
        nbytes = count * np.dtype(dtype).itemsize
        if groups and sizes[groups[-1][0]][1] == dtype and held + nbytes <= bucket_bytes:
            groups[-1].append(index)
            held += nbytes
        else:
            groups.append([index])
            held = nbytes
    return groups


def data_parallel(graph: Graph, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> Graph:
    """Replace each of ``graph.grads`` by its average over the data-parallel processes
    (``bucket_bytes`` 0: sized from the model, see ``TARGET_BUCKETS``)."""
    if not graph.grads:
        return graph
    pairs = list(graph.grads)
    order = list(reversed(range(len(pairs))))
    sizes = [(math.prod(pairs[i][1].type.shape), pairs[i][1].type.dtype) for i in order]
    if bucket_bytes <= 0:
        total = sum(count * np.dtype(dtype).itemsize for count, dtype in sizes)
        bucket_bytes = max(MIN_BUCKET_BYTES, -(-total // TARGET_BUCKETS))
    grouped = [[order[k] for k in group] for group in buckets(sizes, bucket_bytes)]
    averaged: dict[int, Tensor] = {}
    loss = graph.outputs[0]
    with derived_from(loss, "grad"):
        for b, group in enumerate(grouped):
            names = ", ".join(pairs[i][0].attrs["var"].name or f"variable {pairs[i][0].attrs['var'].id}"
                              for i in group[:3]) + (", ..." if len(group) > 3 else "")
            what = f"gradient bucket {b + 1} of {len(grouped)} ({names})"
            parts = [reshape(Tensor(pairs[i][1]), (-1,)) for i in group]
            # a bucket of its own memory: the allreduce writes it in place while other steps run
            flat = concat(parts, axis=0) if len(parts) > 1 else copy(parts[0])
            done = allreduce_wait(allreduce_start(flat, what), what)
            offset = 0
            for i in group:
                shape = pairs[i][1].type.shape
                count = math.prod(shape)
                averaged[i] = reshape(done[offset:offset + count], shape)
                offset += count
    new_pairs = tuple((p, averaged[i].node) for i, (p, _) in enumerate(pairs))
    return Graph.build(graph.outputs, graph.output_names, graph.effects, new_pairs)
