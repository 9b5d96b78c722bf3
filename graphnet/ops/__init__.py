"""Every op graphnet knows, as a public functional form with NumPy-like names.

The definitions (shape rule, gradient rule, kernel) live next to each function in the
submodules; ``REGISTRY`` maps op names to them.
"""

from .registry import REGISTRY, OpDef, defop, get_op  # noqa: F401
from . import leaves  # noqa: F401  (register the leaf ops)
from .elementwise import *  # noqa: F401,F403  (every elementwise op's function: elementwise.__all__)
from .reduce import (  # noqa: F401
    broadcast_like, broadcast_to, expand_dims, max, mean, min, numel, squeeze, sum,
)
from .shape import (  # noqa: F401
    concat, flatten, getitem, pad, reshape, reshape_like, slice_, swapaxes, transpose,
)
from .linalg import matmul  # noqa: F401
from .nn import (  # noqa: F401
    assign, avg_pool2d, conv2d, dropout, log_softmax, max_pool2d, one_hot, softmax,
)
from .norm import batch_norm, group_norm, layer_norm  # noqa: F401
from .conv import conv1d, conv2d_padded, conv_transpose2d  # noqa: F401
from .pooling import (  # noqa: F401
    adaptive_avg_pool2d, avg_pool1d, avg_pool2d_ext, max_pool1d, max_pool2d_ext,
)
from .embedding import embedding  # noqa: F401
from .counting import count_batches  # noqa: F401
from .common import sum_to  # noqa: F401
from .shape import copy, stop_gradient  # noqa: F401
from .tuples import results, tuple_get  # noqa: F401
from .control import cond, scan, while_loop  # noqa: F401
from .collective import allreduce_sum  # noqa: F401
from .conv import conv_transpose1d  # noqa: F401
from .nn import dropout2d  # noqa: F401
from .norm import instance_norm, rms_norm  # noqa: F401
from .pooling import adaptive_max_pool2d  # noqa: F401
from .resample import interpolate  # noqa: F401
from .sequence import argmax, causal_mask, cumsum, einsum, masked_fill, topk, tril, triu  # noqa: F401  (issue 24)
from .attention import scaled_dot_product_attention  # noqa: F401  (issue 24)
from . import fused, vjp  # noqa: F401  (register fused and composite_vjp)
