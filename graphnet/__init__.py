"""graphnet: declare a network symbolically, compile it to a plan, run it on NumPy.

    import graphnet as gn
    x = gn.placeholder("x", (None, 784))
    model = gn.nn.Sequential(gn.nn.Linear(784, 10))
    train = gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=gn.optim.Adam())
"""

from .version import __version__  # noqa: F401

from . import config, data, distributed, dtypes, export, losses, nn, ops, optim, passes, plots, train  # noqa: F401
from .compile import CompiledPlan, compile, load  # noqa: F401
from . import debug  # noqa: F401,E402  (gn.debug.bisect_passes)
from .errors import (  # noqa: F401
    ConfigError, DistributedError, DistributedTimeoutError, DTypeError, ExecutorError, FeedCastWarning, FeedError,
    GradientError, GraphError, GraphnetError,
    LossNotFiniteError, MemoryLimitError, ModeWarning,
    NumericsError, OptimizerError, PlanFileError, PlanVersionError, ShapeError, SymbolicTensorError,
)
from . import backends  # noqa: F401,E402  (registers the backends graphnet ships)
from . import onnx  # noqa: F401,E402  (gn.onnx.export, gn.onnx.load; the onnx package is imported on use)
from .kernels.cpu.threads import set_num_threads  # noqa: F401
from .grad import grad  # noqa: F401
from .ops.control import cond, scan, while_loop  # noqa: F401
from .summary import ModelSummary, summary  # noqa: F401
from .ir import Graph, Node, TensorType  # noqa: F401
from .nn.init import manual_seed  # noqa: F401
from .ops.elementwise import *  # noqa: F401,F403,E402  (every elementwise op: gn.relu, gn.where, ...)
from .ops import (  # noqa: F401
    batch_norm, broadcast_like, broadcast_to, concat, dropout, expand_dims, flatten, log_softmax, matmul, max, mean,
    min, one_hot, pad, reshape, softmax, squeeze, stop_gradient, sum, swapaxes, transpose, tuple_get,
)
from .ops import (  # noqa: F401  (the public forms take PyTorch's options: padding="same", ceil_mode, ...)
    adaptive_avg_pool2d, avg_pool1d, conv1d, conv_transpose2d, embedding, group_norm, layer_norm, max_pool1d, silu,
)
from .ops import (  # noqa: F401  (issue 23's layers, functional forms)
    adaptive_max_pool2d, conv_transpose1d, dropout2d, instance_norm, interpolate, rms_norm,
)
from .ops import (  # noqa: F401  (issue 24's sequence ops; sin and cos come with the elementwise ops)
    argmax, causal_mask, cumsum, einsum, masked_fill, topk, tril, triu,
)
from .ops import scaled_dot_product_attention  # noqa: F401  (issue 24: attention in one op)
from .ops import avg_pool2d_ext as avg_pool2d, conv2d_padded as conv2d, max_pool2d_ext as max_pool2d  # noqa: F401
from .ops.shape import slice_ as slice  # noqa: F401
from .plan import Plan, Step  # noqa: F401
from .printing import format_graph, format_plan, make_graph  # noqa: F401
from .render import RenderError, render, to_dot  # noqa: F401
from .tensor import Parameter, Tensor, constant, placeholder  # noqa: F401

