"""graphnet graphs to ONNX models.

``export(outputs_or_plan, path)`` writes the *declared* graph (composite ops such as
batch_norm and layer_norm keep their identity, so they become BatchNormalization and
LayerNormalization), in evaluation mode, with the parameters as initializers. Each op has
one function in ``EXPORTERS`` that emits its ONNX nodes; an op without one is an
OnnxExportError naming it and the line that declared it. Unknown dims become ``dim_param``s
(a placeholder's own name and axis); inputs and outputs keep graphnet's names and node
names carry the module path.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import OnnxError, OnnxExportError
from ..ir import Graph, Node, TensorType, TupleType, rebuild, topological_order
from ..passes.resolve_modes import resolve_modes

#: ONNX Runtime 1.2x runs opset 21 fully; Gelu needs 20, LayerNormalization 17
DEFAULT_OPSET = 21
MIN_OPSET = 18  # reductions take their axes as an input from 18 on

_INT64_MAX = 2 ** 63 - 1


def onnx_module() -> Any:
    """The ``onnx`` package, or OnnxError saying how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise OnnxError(f"ONNX support needs the onnx package ({exc}): pip install 'graphnet[onnx]'") from None
    return onnx


def tensor_type(dtype: str) -> int:
    """ONNX's element type for a graphnet dtype."""
    onnx = onnx_module()
    table = {"float32": onnx.TensorProto.FLOAT, "float64": onnx.TensorProto.DOUBLE,
             "float16": onnx.TensorProto.FLOAT16, "int64": onnx.TensorProto.INT64, "int32": onnx.TensorProto.INT32,
             "int16": onnx.TensorProto.INT16, "int8": onnx.TensorProto.INT8, "uint8": onnx.TensorProto.UINT8,
             "bool": onnx.TensorProto.BOOL}
    if dtype not in table:
        raise OnnxExportError(f"dtype {dtype} has no ONNX element type")
    return table[dtype]


class _Context:
    """What the node exporters write into: nodes, initializers, and each graphnet value's name."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.onnx = onnx_module()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.names: dict[int, Any] = {}  # node uid -> its ONNX name (a tuple of names for a tuple)
        self.used: set[str] = set()
        self.node: Node | None = None  # the graphnet node being exported

    def fresh(self, hint: str) -> str:
        base = "".join(c if c.isalnum() or c in "._-/" else "_" for c in hint) or "v"
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def value(self, node: Node) -> str:
        return self.names[node.uid]

    def const(self, array: Any, hint: str = "const") -> str:
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, values: Sequence[int], hint: str = "ints") -> str:
        return self.const(np.asarray(list(values), np.int64), hint)

    def emit(self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1, **attrs: Any) -> list[str]:
        node = self.node
        scope = (node.scope.replace(".", "/") + "/") if node is not None and node.scope else ""
        label = f"{scope}{op_type}"
        names = [self.fresh(f"{label}_out") for _ in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), names, name=self.fresh(label),
                                                     **{k: v for k, v in attrs.items() if v is not None}))
        return names

    def cast(self, name: str, have: str, want: str) -> str:
        return name if have == want else self.emit("Cast", [name], to=tensor_type(want))[0]

    def refuse(self, why: str) -> OnnxExportError:
        node = self.node
        where = f" in {node.scope}" if node is not None and node.scope else ""
        at = f" (declared at {node.location})" if node is not None and node.location else ""
        return OnnxExportError(f"{node.op if node is not None else '?'}{where}{at}: {why}")


Exporter = Callable[[_Context, Node, list[str]], Any]
EXPORTERS: dict[str, Exporter] = {}


def _exports(*ops: str) -> Callable[[Exporter], Exporter]:
    def register(fn: Exporter) -> Exporter:
        for op in ops:
            EXPORTERS[op] = fn
        return fn
    return register


def _dtype(node: Node) -> str:
    return node.type.dtype


# --- elementwise -----------------------------------------------------------------------------

_UNARY = {"abs": "Abs", "cos": "Cos", "sin": "Sin", "exp": "Exp", "log": "Log", "neg": "Neg", "sqrt": "Sqrt",
          "tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu", "erf": "Erf", "sign": "Sign"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "maximum": "Max", "minimum": "Min"}
_COMPARE = {"equal": "Equal", "less": "Less", "greater": "Greater", "less_equal": "LessOrEqual",
            "greater_equal": "GreaterOrEqual"}


@_exports(*_UNARY)
def _unary(ctx: _Context, node: Node, ins: list[str]) -> str:
    x = ctx.cast(ins[0], _dtype(node.inputs[0]), _dtype(node))
    return ctx.emit(_UNARY[node.op], [x])[0]


@_exports(*_BINARY)
def _binary(ctx: _Context, node: Node, ins: list[str]) -> str:
    out = _dtype(node)
    return ctx.emit(_BINARY[node.op], [ctx.cast(n, _dtype(i), out) for n, i in zip(ins, node.inputs)])[0]


def _common(node: Node) -> str:
    from .. import dtypes

    return dtypes.promote(*[_dtype(i) for i in node.inputs])


@_exports(*_COMPARE, "not_equal")
def _compare(ctx: _Context, node: Node, ins: list[str]) -> str:
    common = _common(node)
    args = [ctx.cast(n, _dtype(i), common) for n, i in zip(ins, node.inputs)]
    if node.op == "not_equal":
        return ctx.emit("Not", ctx.emit("Equal", args))[0]
    return ctx.emit(_COMPARE[node.op], args)[0]


@_exports("where")
def _where(ctx: _Context, node: Node, ins: list[str]) -> str:
    out = _dtype(node)
    condition = ctx.cast(ins[0], _dtype(node.inputs[0]), "bool")
    return ctx.emit("Where", [condition] + [ctx.cast(n, _dtype(i), out) for n, i in zip(ins[1:], node.inputs[1:])])[0]


@_exports("cast")
def _cast(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Cast", ins, to=tensor_type(node.attrs["dtype"]))[0]


@_exports("elu")
def _elu(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Elu", ins, alpha=float(node.attrs["alpha"]))[0]


@_exports("leaky_relu")
def _leaky_relu(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("LeakyRelu", ins, alpha=float(node.attrs["alpha"]))[0]


@_exports("gelu")
def _gelu(ctx: _Context, node: Node, ins: list[str]) -> str:
    if ctx.opset < 20:
        raise ctx.refuse(f"Gelu needs opset 20 or later (exporting opset {ctx.opset})")
    return ctx.emit("Gelu", ins, approximate=node.attrs["approximate"])[0]


@_exports("softplus")
def _softplus(ctx: _Context, node: Node, ins: list[str]) -> str:
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as PyTorch)."""
    beta, threshold = float(node.attrs["beta"]), float(node.attrs["threshold"])
    dtype = np.dtype(_dtype(node))
    scaled = ctx.emit("Mul", [ins[0], ctx.const(np.array(beta, dtype), "beta")])[0]
    soft = ctx.emit("Div", [ctx.emit("Softplus", [scaled])[0], ctx.const(np.array(beta, dtype), "beta")])[0]
    above = ctx.emit("Greater", [scaled, ctx.const(np.array(threshold, dtype), "threshold")])[0]
    return ctx.emit("Where", [above, ins[0], soft])[0]


# --- products, reductions --------------------------------------------------------------------

@_exports("matmul")
def _matmul(ctx: _Context, node: Node, ins: list[str]) -> str:
    out = _dtype(node)
    return ctx.emit("MatMul", [ctx.cast(n, _dtype(i), out) for n, i in zip(ins, node.inputs)])[0]


@_exports("einsum")
def _einsum(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Einsum", ins, equation=node.attrs["subscripts"].replace(" ", ""))[0]


_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax"}


@_exports(*_REDUCE)
def _reduce(ctx: _Context, node: Node, ins: list[str]) -> str:
    axes = tuple(node.attrs["axes"])
    keep = int(bool(node.attrs["keepdims"]))
    if not axes:  # graphnet's empty axes: every axis
        axes = tuple(range(node.inputs[0].type.ndim))
    return ctx.emit(_REDUCE[node.op], [ins[0], ctx.ints(axes, "axes")], keepdims=keep)[0]


@_exports("softmax", "log_softmax")
def _softmax(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Softmax" if node.op == "softmax" else "LogSoftmax", ins, axis=int(node.attrs["axis"]))[0]


@_exports("argmax")
def _argmax(ctx: _Context, node: Node, ins: list[str]) -> str:
    axes = tuple(node.attrs["axis"])
    if len(axes) != 1:
        raise ctx.refuse("ArgMax takes one axis")
    return ctx.emit("ArgMax", ins, axis=int(axes[0]), keepdims=int(bool(node.attrs["keepdims"])))[0]


@_exports("cumsum")
def _cumsum(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("CumSum", [ins[0], ctx.const(np.array(int(node.attrs["axis"]), np.int64), "axis")],
                    reverse=int(bool(node.attrs["reverse"])))[0]


@_exports("topk")
def _topk(ctx: _Context, node: Node, ins: list[str]) -> tuple[str, ...]:
    return tuple(ctx.emit("TopK", [ins[0], ctx.ints([int(node.attrs["k"])], "k")], outputs=2,
                          axis=int(node.attrs["axis"]), largest=int(bool(node.attrs["largest"])), sorted=1))


@_exports("tril", "triu")
def _trilu(ctx: _Context, node: Node, ins: list[str]) -> str:
    k = ctx.const(np.array(int(node.attrs["diagonal"]), np.int64), "k")
    return ctx.emit("Trilu", [ins[0], k], upper=int(node.op == "triu"))[0]


# --- layout ----------------------------------------------------------------------------------

def _target_shape(ctx: _Context, node: Node) -> list[int]:
    """``node``'s result shape as Reshape's shape input: a symbolic dim that is the input's at the
    same position copies it (0); one other symbolic dim is inferred (-1); more is refused."""
    src = node.inputs[0].type.shape
    out: list[int] = []
    inferred = 0
    for axis, d in enumerate(node.type.shape):
        same = axis < len(src) and src[axis] == d
        if isinstance(d, int):
            if d == 0:
                raise ctx.refuse("a reshape to an empty dim")
            out.append(d)
        elif same and (d is not None or axis == 0):  # a named dim, or the leading unknown one (the batch)
            out.append(0)
        else:
            inferred += 1
            out.append(-1)
    if inferred > 1:
        raise ctx.refuse(f"a reshape to {node.type.shape} with several unknown dims")
    return out


@_exports("reshape", "flatten")
def _reshape(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Reshape", [ins[0], ctx.ints(_target_shape(ctx, node), "shape")])[0]


@_exports("reshape_like")
def _reshape_like(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Reshape", [ins[0], ctx.emit("Shape", [ins[1]])[0]])[0]


@_exports("broadcast_to")
def _broadcast_to(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Expand", [ins[0], ctx.ints(node.attrs["shape"], "shape")])[0]


@_exports("broadcast_like")
def _broadcast_like(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Expand", [ins[0], ctx.emit("Shape", [ins[1]])[0]])[0]


@_exports("squeeze")
def _squeeze(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Squeeze", [ins[0], ctx.ints(node.attrs["axes"], "axes")])[0]


@_exports("expand_dims")
def _unsqueeze(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Unsqueeze", [ins[0], ctx.ints(node.attrs["axes"], "axes")])[0]


@_exports("transpose")
def _transpose(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Transpose", ins, perm=list(node.attrs["axes"]))[0]


@_exports("concat")
def _concat(ctx: _Context, node: Node, ins: list[str]) -> str:
    out = _dtype(node)
    return ctx.emit("Concat", [ctx.cast(n, _dtype(i), out) for n, i in zip(ins, node.inputs)],
                    axis=int(node.attrs["axis"]))[0]


@_exports("copy", "stop_gradient", "count_batches")
def _identity(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Identity", ins[:1])[0]


@_exports("pad")
def _pad(ctx: _Context, node: Node, ins: list[str]) -> str:
    widths = node.attrs["pad_width"]
    pads = [w[0] for w in widths] + [w[1] for w in widths]
    value = ctx.const(np.array(node.attrs["value"], _dtype(node)), "pad_value")
    return ctx.emit("Pad", [ins[0], ctx.ints(pads, "pads"), value], mode="constant")[0]


@_exports("slice")
def _slice(ctx: _Context, node: Node, ins: list[str]) -> str:
    starts, ends, axes, steps = [], [], [], []
    for axis, (start, stop, step) in enumerate(node.attrs["key"]):
        step = 1 if step is None else step
        if start is None and stop is None and step == 1:
            continue
        axes.append(axis)
        steps.append(step)
        starts.append(start if start is not None else (0 if step > 0 else _INT64_MAX))
        ends.append(stop if stop is not None else (_INT64_MAX if step > 0 else -_INT64_MAX))
    if not axes:
        return ctx.emit("Identity", ins)[0]
    return ctx.emit("Slice", [ins[0], ctx.ints(starts, "starts"), ctx.ints(ends, "ends"), ctx.ints(axes, "axes"),
                              ctx.ints(steps, "steps")])[0]


# --- convolution and pooling -----------------------------------------------------------------

@_exports("conv2d")
def _conv(ctx: _Context, node: Node, ins: list[str]) -> str:
    a = node.attrs
    kernel = list(node.inputs[1].type.shape[2:])
    return ctx.emit("Conv", ins[:2], kernel_shape=kernel, strides=list(a["stride"]), dilations=list(a["dilation"]),
                    pads=list(a["padding"]) * 2, group=int(a["groups"]))[0]


@_exports("conv_transpose2d")
def _conv_transpose(ctx: _Context, node: Node, ins: list[str]) -> str:
    a = node.attrs
    kernel = list(node.inputs[1].type.shape[2:])
    return ctx.emit("ConvTranspose", ins[:2], kernel_shape=kernel, strides=list(a["stride"]),
                    dilations=list(a["dilation"]), pads=list(a["padding"]) * 2, group=int(a["groups"]),
                    output_padding=list(a["output_padding"]))[0]


@_exports("max_pool2d", "avg_pool2d")
def _pool(ctx: _Context, node: Node, ins: list[str]) -> str:
    a = node.attrs
    extra = {"count_include_pad": 1} if node.op == "avg_pool2d" else {}
    return ctx.emit("MaxPool" if node.op == "max_pool2d" else "AveragePool", ins, kernel_shape=list(a["kernel_size"]),
                    strides=list(a["stride"]), pads=list(a["padding"]) * 2, **extra)[0]


@_exports("adaptive_max_pool2d")
def _adaptive_max_pool(ctx: _Context, node: Node, ins: list[str]) -> str:
    h, w = node.inputs[0].type.shape[2:]
    oh, ow = node.attrs["output_size"]
    if (oh, ow) == (1, 1):
        return ctx.emit("GlobalMaxPool", ins)[0]
    if not (isinstance(h, int) and isinstance(w, int)) or h % oh or w % ow:
        raise ctx.refuse(f"an adaptive max pool from {(h, w)} to {(oh, ow)} has windows of different sizes, "
                         f"which ONNX's MaxPool cannot express")
    return ctx.emit("MaxPool", ins, kernel_shape=[h // oh, w // ow], strides=[h // oh, w // ow])[0]


# --- normalisation, embedding, losses, attention ---------------------------------------------

def _affine(ctx: _Context, node: Node, given: str | None, value: float, size: Any) -> str:
    if given is not None:
        return given
    if not isinstance(size, int):
        raise ctx.refuse("a normalisation without weight over a dim of unknown size")
    return ctx.const(np.full(size, value, _dtype(node.inputs[0])), "ones" if value else "zeros")


@_exports("batch_norm", "sync_batch_norm")
def _batch_norm(ctx: _Context, node: Node, ins: list[str]) -> tuple[str, ...]:
    a = node.attrs
    if a["training"] is not False or not a["stats"]:
        raise ctx.refuse("only evaluation-mode batch norm with running statistics exports (call model.eval())")
    x, rm, rv = ins[:3]
    rest = iter(ins[3:])
    weight = next(rest) if a["weight"] else None
    bias = next(rest) if a["bias"] else None
    channels = node.inputs[0].type.shape[1]
    weight = _affine(ctx, node, weight, 1.0, channels)
    bias = _affine(ctx, node, bias, 0.0, channels)
    y = ctx.emit("BatchNormalization", [x, weight, bias, rm, rv], epsilon=float(a["eps"]))[0]
    return y, rm, rv  # evaluation mode: the statistics it normalised with are the running ones


@_exports("layer_norm")
def _layer_norm(ctx: _Context, node: Node, ins: list[str]) -> str:
    a = node.attrs
    rest = iter(ins[1:])
    n = int(a["normalized_ndim"])
    shape = node.inputs[0].type.shape[-n:]
    if not all(isinstance(d, int) for d in shape):
        raise ctx.refuse("layer norm over dims of unknown size")
    weight = next(rest) if a["weight"] else ctx.const(np.ones(shape, _dtype(node)), "ones")
    bias = next(rest) if a["bias"] else ctx.const(np.zeros(shape, _dtype(node)), "zeros")
    return ctx.emit("LayerNormalization", [ins[0], weight, bias], axis=-n, epsilon=float(a["eps"]))[0]


@_exports("embedding")
def _embedding(ctx: _Context, node: Node, ins: list[str]) -> str:
    return ctx.emit("Gather", [ins[0], ins[1]], axis=0)[0]


@_exports("one_hot")
def _one_hot(ctx: _Context, node: Node, ins: list[str]) -> str:
    values = ctx.const(np.array([0, 1], node.attrs["dtype"]), "values")
    depth = ctx.const(np.array(int(node.attrs["num_classes"]), np.int64), "depth")
    return ctx.emit("OneHot", [ins[0], depth, values], axis=-1)[0]


@_exports("cross_entropy")
def _cross_entropy(ctx: _Context, node: Node, ins: list[str]) -> str:
    if float(node.attrs["label_smoothing"]) != 0.0:
        raise ctx.refuse("ONNX's SoftmaxCrossEntropyLoss has no label smoothing")
    return ctx.emit("SoftmaxCrossEntropyLoss", ins[:2], reduction=node.attrs["reduction"])[0]


@_exports("scaled_dot_product_attention")
def _attention(ctx: _Context, node: Node, ins: list[str]) -> tuple[str, ...]:
    """softmax(q k^T * scale + mask) v, as MatMul, Softmax and MatMul (dropout is off in evaluation)."""
    a = node.attrs
    q, k, v = ins[:3]
    dtype = np.dtype(_dtype(node.inputs[0]))
    rank = node.inputs[1].type.ndim
    keys_t = ctx.emit("Transpose", [k], perm=list(range(rank - 2)) + [rank - 1, rank - 2])[0]
    scores = ctx.emit("Mul", [ctx.emit("MatMul", [q, keys_t])[0], ctx.const(np.array(a["scale"], dtype), "scale")])[0]
    for mask_node, mask in zip(node.inputs[3:], ins[3:]):
        if mask_node.type.dtype == "bool":
            scores = ctx.emit("Where", [mask, scores, ctx.const(np.array(-np.inf, dtype), "neg_inf")])[0]
        else:
            scores = ctx.emit("Add", [scores, ctx.cast(mask, mask_node.type.dtype, dtype.name)])[0]
    if a["causal"]:
        rows, keys = node.inputs[0].type.shape[-2], node.inputs[1].type.shape[-2]
        if not (isinstance(rows, int) and isinstance(keys, int)):
            raise ctx.refuse("a causal mask over a sequence of unknown length")
        keep = ctx.const(np.tril(np.ones((rows, keys), bool)), "causal")
        scores = ctx.emit("Where", [keep, scores, ctx.const(np.array(-np.inf, dtype), "neg_inf")])[0]
    out = ctx.emit("MatMul", [ctx.emit("Softmax", [scores], axis=-1)[0], v])[0]
    return out, None, None  # the log-sum-exp and dropout seed exist for training only


# --- the graph -------------------------------------------------------------------------------

def _graph(outputs_or_plan: Any) -> Graph:
    """The declared graph to export, in evaluation mode."""
    source = getattr(outputs_or_plan, "source", None)
    if isinstance(source, Graph):
        graph = source
    else:
        from ..compile import normalize_outputs

        names, nodes = normalize_outputs(outputs_or_plan, {})
        graph = Graph.build(nodes, names, [])

    def unpack(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        # a part of a tuple made right there (eval-mode dropout's (x, ones)): that part itself
        if node.op == "tuple_get" and inputs[0].op == "make_tuple":
            return inputs[0].inputs[node.attrs["index"]]
        return None

    return rebuild(resolve_modes(graph, mode="eval"), unpack)


def _value_info(ctx: _Context, name: str, t: TensorType, owner: str) -> Any:
    dims = []
    for axis, d in enumerate(t.shape):
        dims.append(d if isinstance(d, int) else (str(d) if isinstance(d, str) else f"{owner}_dim{axis}"))
    return ctx.onnx.helper.make_tensor_value_info(name, tensor_type(t.dtype), dims)


def to_model(outputs_or_plan: Any, opset: int = DEFAULT_OPSET, producer: str = "graphnet") -> Any:
    """The ONNX ModelProto of ``outputs_or_plan`` (a CompiledPlan, a tensor, list or dict)."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise OnnxExportError(f"opset must be an int >= {MIN_OPSET}, got {opset!r}")
    graph = _graph(outputs_or_plan)
    ctx = _Context(opset)
    inputs, unsupported = [], []
    nodes = topological_order(graph.outputs)  # what the outputs read (not eval-mode dropout's unused mask)
    for node in nodes:
        if node.op not in EXPORTERS and node.op not in ("placeholder", "variable", "constant", "tuple_get",
                                                         "make_tuple"):
            where = f" (declared at {node.location})" if node.location else ""
            unsupported.append(f"{node.op}{' in ' + node.scope if node.scope else ''}{where}")
    if unsupported:
        raise OnnxExportError("no ONNX counterpart for: " + "; ".join(dict.fromkeys(unsupported)))
    for node in nodes:
        ctx.node = node
        if node.op == "placeholder":
            name = ctx.fresh(node.attrs["name"])
            inputs.append(_value_info(ctx, name, node.type, node.attrs["name"]))
            ctx.names[node.uid] = name
        elif node.op == "variable":
            var = node.attrs["var"]
            ctx.names[node.uid] = ctx.const(var.data, var.name or f"variable_{var.id}")
        elif node.op == "constant":
            ctx.names[node.uid] = ctx.const(node.attrs["value"].array, "const")
        elif node.op == "tuple_get":
            found = ctx.names[node.inputs[0].uid][node.attrs["index"]]
            if found is None:
                raise ctx.refuse("this result exists in training only")
            ctx.names[node.uid] = found
        elif node.op == "make_tuple":
            ctx.names[node.uid] = tuple(ctx.value(i) for i in node.inputs)
        else:
            result = EXPORTERS[node.op](ctx, node, [ctx.value(i) for i in node.inputs])
            ctx.names[node.uid] = result
    outputs = []
    for name, node in zip(graph.output_names, graph.outputs):
        if isinstance(node.type, TupleType):
            raise OnnxExportError(f"output {name!r} is a tuple; export its parts (tuple_get) instead")
        out = ctx.emit("Identity", [ctx.value(node)], outputs=[ctx.fresh(name)])[0]
        outputs.append(_value_info(ctx, out, node.type, name))
    onnx = ctx.onnx
    read = {name for n in ctx.nodes for name in n.input}
    kept = [t for t in ctx.initializers if t.name in read]  # state the graph does not read (a BatchNorm's counter)
    body = onnx.helper.make_graph(ctx.nodes, "graphnet", inputs, outputs, kept)
    model = onnx.helper.make_model(body, producer_name=producer, opset_imports=[onnx.helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)  # what ONNX Runtime 1.2x reads
    return model


def export(outputs_or_plan: Any, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET) -> str:
    """Write ``outputs_or_plan`` (a CompiledPlan, or the tensors to compute: one, a list, or a dict
    name -> tensor) to ``path`` as an ONNX model of ``opset``: the declared graph in evaluation
    mode, parameters as initializers, unknown dims as ``dim_param``s. Raises OnnxExportError
    listing every op that has no ONNX counterpart. Returns the path."""
    onnx = onnx_module()
    model = to_model(outputs_or_plan, opset)
    onnx.checker.check_model(model, full_check=True)
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as handle:  # a reader never sees half a file
        handle.write(model.SerializeToString())
    os.replace(tmp, path)
    return path

