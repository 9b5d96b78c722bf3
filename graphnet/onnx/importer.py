"""ONNX models to graphnet tensors.

``load(path)`` reads the file as untrusted input (files.py), then declares one graphnet op
(or a few) per ONNX node: graph inputs become placeholders, initializers Parameters (so
the model fine-tunes with any optimizer; ``trainable=False`` makes them constants), and the
outputs come back as a dict name -> Tensor, ready for ``gn.compile``. Every node is checked
before anything is declared: ops or attributes graphnet does not have are one
OnnxImportError listing all of them. Shape-like inputs (Reshape's shape, Slice's starts,
reduction axes) must be constants, as they are in exported models.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np

from .. import ops
from ..errors import GraphnetError, OnnxFileError, OnnxImportError
from ..ops import elementwise as E
from ..tensor import Parameter, Tensor, constant, placeholder
from .files import ELEMENT_TYPES, parse, read_model, initializers as read_initializers, tensor_array

Importer = Callable[["_Context", Any, list[Any]], Any]
IMPORTERS: dict[str, Importer] = {}
#: per op, the attributes its importer reads (any other, if set, is refused)
ATTRIBUTES: dict[str, set[str]] = {}


def _imports(*op_types: str, attrs: tuple[str, ...] = ()) -> Callable[[Importer], Importer]:
    def register(fn: Importer) -> Importer:
        for op in op_types:
            IMPORTERS[op] = fn
            ATTRIBUTES[op] = set(attrs)
        return fn
    return register


class _Context:
    """Values by ONNX name (graphnet tensors, or NumPy arrays for constants)."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.values: dict[str, Any] = {}

    def constant_array(self, name: str, what: str) -> np.ndarray:
        value = self.values.get(name)
        if isinstance(value, np.ndarray):
            return value
        if isinstance(value, Parameter):  # an initializer read as a setting (a pad value, a shape)
            return np.asarray(value.data)
        raise OnnxImportError(f"{what} must be a constant in the model (an initializer or a Constant node)")

    def tensor(self, value: Any) -> Tensor:
        """``value`` as a tensor (a constant array becomes a constant node)."""
        return value if isinstance(value, Tensor) else constant(np.asarray(value))


def _attrs(node: Any) -> dict[str, Any]:
    from .export import onnx_module

    helper = onnx_module().helper
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}  # strings come as bytes


def _ints(value: Any) -> list[int]:
    return [int(v) for v in value]


# --- elementwise -----------------------------------------------------------------------------

_UNARY = {"Abs": E.abs, "Cos": E.cos, "Sin": E.sin, "Exp": E.exp, "Log": E.log, "Neg": E.neg, "Sqrt": E.sqrt,
          "Tanh": E.tanh, "Sigmoid": E.sigmoid, "Relu": E.relu, "Erf": E.erf, "Sign": E.sign}


def _arrays_or_tensors(ctx: _Context, ins: list[Any]) -> list[Any]:
    """Inputs as tensors, constants converted in the dtype of a tensor among them (as NumPy would
    for 0-d constants)."""
    like = next((i for i in ins if isinstance(i, Tensor)), None)
    out = []
    for value in ins:
        if isinstance(value, Tensor):
            out.append(value)
        else:
            array = np.asarray(value)
            if like is not None and array.dtype != np.dtype(like.dtype) and array.dtype.kind == np.dtype(like.dtype).kind:
                array = array.astype(like.dtype)
            out.append(constant(array))
    return out


@_imports(*_UNARY)
def _unary(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    return _UNARY[node.op_type](*_arrays_or_tensors(ctx, ins))


_BINARY = {"Add": E.add, "Sub": E.sub, "Mul": E.mul, "Div": E.div, "Pow": E.pow, "Equal": E.equal,
           "Less": E.less, "Greater": E.greater, "LessOrEqual": E.less_equal, "GreaterOrEqual": E.greater_equal}


@_imports(*_BINARY)
def _binary(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a, b = _arrays_or_tensors(ctx, ins)
    if node.op_type == "Div" and not a.dtype.startswith("float"):
        raise OnnxImportError("Div of integers (ONNX truncates; graphnet divides exactly)")
    return _BINARY[node.op_type](a, b)


@_imports("Max", "Min", "Sum", "Mean")
def _variadic(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    tensors = _arrays_or_tensors(ctx, ins)
    fn = {"Max": E.maximum, "Min": E.minimum, "Sum": E.add, "Mean": E.add}[node.op_type]
    out = tensors[0]
    for t in tensors[1:]:
        out = fn(out, t)
    return out / float(len(tensors)) if node.op_type == "Mean" else out


@_imports("CastLike", attrs=("saturate",))
def _cast_like(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    like = ins[1]
    dtype = like.dtype if isinstance(like, Tensor) else np.asarray(like).dtype.name
    return E.cast(ctx.tensor(ins[0]), dtype)


@_imports("Not")
def _not(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    (x,) = _arrays_or_tensors(ctx, ins)
    return E.equal(x, constant(np.array(False)))


@_imports("Where")
def _where(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    c, a, b = _arrays_or_tensors(ctx, ins)
    return E.where(c, a, b)


@_imports("Cast", attrs=("to", "saturate"))
def _cast(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    to = _attrs(node)["to"]
    if to not in ELEMENT_TYPES:
        raise OnnxImportError(f"Cast to element type {to}")
    return E.cast(ctx.tensor(ins[0]), ELEMENT_TYPES[to])


@_imports("Elu", attrs=("alpha",))
def _elu(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    return E.elu(ctx.tensor(ins[0]), float(_attrs(node).get("alpha", 1.0)))


@_imports("LeakyRelu", attrs=("alpha",))
def _leaky_relu(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    return E.leaky_relu(ctx.tensor(ins[0]), float(_attrs(node).get("alpha", 0.01)))


@_imports("Gelu", attrs=("approximate",))
def _gelu(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    return E.gelu(ctx.tensor(ins[0]), _attrs(node).get("approximate", "none"))


@_imports("Softplus")
def _softplus(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    return E.softplus(ctx.tensor(ins[0]), 1.0, float("inf"))


@_imports("Split", attrs=("axis", "num_outputs", "split"))
def _split(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = _attrs(node)
    x = ctx.tensor(ins[0])
    axis = int(a.get("axis", 0)) % x.ndim
    size = x.shape[axis]
    if not isinstance(size, int):
        raise OnnxImportError("Split along a dim of unknown size")
    if len(ins) > 1 and ins[1] is not None and node.input[1]:
        sizes = _ints(ctx.constant_array(node.input[1], "Split's sizes"))
    elif "split" in a:
        sizes = _ints(a["split"])
    else:
        parts = int(a.get("num_outputs", len(node.output)))
        chunk = -(-size // parts)
        sizes = [min(chunk, size - k * chunk) for k in range(parts)]
    outs, start = [], 0
    for n in sizes:
        key = [slice(None)] * x.ndim
        key[axis] = slice(start, start + n)
        outs.append(x[tuple(key)])
        start += n
    return tuple(outs)


@_imports("Identity", "Dropout", attrs=("seed",))
def _identity(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    return ins[0]  # Dropout at inference: the identity (its optional mask output is not read)


@_imports("Clip")
def _clip(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    x = ctx.tensor(ins[0])
    if len(ins) > 1 and ins[1] is not None:
        x = E.maximum(x, constant(np.asarray(ctx.constant_array(node.input[1], "Clip's min"), x.dtype)))
    if len(ins) > 2 and ins[2] is not None:
        x = E.minimum(x, constant(np.asarray(ctx.constant_array(node.input[2], "Clip's max"), x.dtype)))
    return x


# --- products, reductions --------------------------------------------------------------------

@_imports("MatMul")
def _matmul(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    return ops.matmul(*_arrays_or_tensors(ctx, ins))


@_imports("Gemm", attrs=("alpha", "beta", "transA", "transB"))
def _gemm(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = _attrs(node)
    x, w = (ctx.tensor(v) for v in ins[:2])
    if a.get("transA", 0):
        x = ops.transpose(x)
    if a.get("transB", 0):
        w = ops.transpose(w)
    y = ops.matmul(x, w)
    if float(a.get("alpha", 1.0)) != 1.0:
        y = y * float(a["alpha"])
    if len(ins) > 2 and ins[2] is not None:
        c = ctx.tensor(ins[2])
        y = y + (c * float(a["beta"]) if float(a.get("beta", 1.0)) != 1.0 else c)
    return y


@_imports("Einsum", attrs=("equation",))
def _einsum(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    return ops.einsum(_attrs(node)["equation"], *_arrays_or_tensors(ctx, ins))


def _l1(x: Tensor, axes: tuple[int, ...], keepdims: bool) -> Tensor:
    return ops.sum(E.abs(x), axes, keepdims=keepdims)


def _l2(x: Tensor, axes: tuple[int, ...], keepdims: bool) -> Tensor:
    return E.sqrt(ops.sum(x * x, axes, keepdims=keepdims))


def _sum_square(x: Tensor, axes: tuple[int, ...], keepdims: bool) -> Tensor:
    return ops.sum(x * x, axes, keepdims=keepdims)


def _log_sum_exp(x: Tensor, axes: tuple[int, ...], keepdims: bool) -> Tensor:
    top = ops.max(x, axes, keepdims=True)  # shifted, so that exp cannot overflow
    shifted = E.log(ops.sum(E.exp(x - top), axes, keepdims=True)) + top
    return shifted if keepdims else ops.squeeze(shifted, axes)


_REDUCE = {"ReduceSum": ops.sum, "ReduceMean": ops.mean, "ReduceMax": ops.max, "ReduceMin": ops.min,
           "ReduceL1": _l1, "ReduceL2": _l2, "ReduceSumSquare": _sum_square, "ReduceLogSumExp": _log_sum_exp}


@_imports(*_REDUCE, attrs=("keepdims", "noop_with_empty_axes", "axes"))
def _reduce(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = _attrs(node)
    x = ctx.tensor(ins[0])
    if len(ins) > 1 and ins[1] is not None:
        axes = _ints(ctx.constant_array(node.input[1], f"{node.op_type}'s axes"))
    else:
        axes = _ints(a.get("axes", []))
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.ndim))
    axes = [axis % x.ndim for axis in axes]
    return _REDUCE[node.op_type](x, tuple(sorted(axes)), keepdims=bool(a.get("keepdims", 1)))


@_imports("Softmax", "LogSoftmax", attrs=("axis",))
def _softmax(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    if ctx.opset < 13:
        raise OnnxImportError(f"{node.op_type} of opset {ctx.opset} (it flattens to 2-d before 13)")
    fn = ops.softmax if node.op_type == "Softmax" else ops.log_softmax
    return fn(ctx.tensor(ins[0]), int(_attrs(node).get("axis", -1)))


@_imports("ArgMax", "ArgMin", attrs=("axis", "keepdims", "select_last_index"))
def _argmax(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = _attrs(node)
    if a.get("select_last_index", 0):
        raise OnnxImportError(f"{node.op_type} with select_last_index")
    x = ctx.tensor(ins[0])
    if node.op_type == "ArgMin":
        if not x.dtype.startswith("float"):
            raise OnnxImportError("ArgMin of integers")
        x = -x
    return ops.argmax(x, int(a.get("axis", 0)), keepdims=bool(a.get("keepdims", 1)))


@_imports("CumSum", attrs=("exclusive", "reverse"))
def _cumsum(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = _attrs(node)
    if a.get("exclusive", 0):
        raise OnnxImportError("CumSum with exclusive=1")
    axis = int(ctx.constant_array(node.input[1], "CumSum's axis"))
    x = ctx.tensor(ins[0])
    if a.get("reverse", 0):
        from ..ops.common import declare

        return declare("cumsum", [x], {"axis": axis % x.ndim, "reverse": True})
    return ops.cumsum(x, axis)


@_imports("TopK", attrs=("axis", "largest", "sorted"))
def _topk(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = _attrs(node)
    k = int(np.asarray(ctx.constant_array(node.input[1], "TopK's k")).reshape(-1)[0])
    found = ops.topk(ctx.tensor(ins[0]), k, int(a.get("axis", -1)), bool(a.get("largest", 1)))
    return found[0], found[1]


@_imports("Trilu", attrs=("upper",))
def _trilu(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    k = int(ctx.constant_array(node.input[1], "Trilu's k")) if len(ins) > 1 and ins[1] is not None else 0
    fn = ops.triu if _attrs(node).get("upper", 1) else ops.tril
    return fn(ctx.tensor(ins[0]), k)


# --- layout ----------------------------------------------------------------------------------

@_imports("Reshape", attrs=("allowzero",))
def _reshape(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    x = ctx.tensor(ins[0])
    shape = _ints(ctx.constant_array(node.input[1], "Reshape's shape"))
    if _attrs(node).get("allowzero", 0) and 0 in shape:
        raise OnnxImportError("Reshape with allowzero=1 to an empty dim")
    target = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    if sum(1 for d in target if not isinstance(d, int) or d == -1) > 1:  # two unknown dims: pin the copied ones
        target = [d if isinstance(d, int) else -1 for d in target]
    return ops.reshape(x, [d if isinstance(d, int) else -1 for d in target])


@_imports("Flatten", attrs=("axis",))
def _flatten(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    """(the product of the dims before ``axis``, the product of the rest)."""
    x = ctx.tensor(ins[0])
    axis = int(_attrs(node).get("axis", 1)) % (x.ndim + 1) if x.ndim else 0
    if axis == 0:
        return ops.reshape(x, (1, -1))
    head = ops.flatten(x, 0, axis - 1) if axis > 1 else x
    return ops.flatten(head, 1, -1) if head.ndim > 1 else ops.expand_dims(head, 1)


@_imports("Transpose", attrs=("perm",))
def _transpose(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    perm = _attrs(node).get("perm")
    return ops.transpose(ctx.tensor(ins[0]), None if perm is None else tuple(_ints(perm)))


@_imports("Concat", attrs=("axis",))
def _concat(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    return ops.concat(_arrays_or_tensors(ctx, ins), int(_attrs(node)["axis"]))


def _axes_of(ctx: _Context, node: Any, ins: list[Any]) -> list[int] | None:
    if len(ins) > 1 and ins[1] is not None:
        return _ints(ctx.constant_array(node.input[1], f"{node.op_type}'s axes"))
    axes = _attrs(node).get("axes")
    return None if axes is None else _ints(axes)


@_imports("Squeeze", attrs=("axes",))
def _squeeze(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    axes = _axes_of(ctx, node, ins)
    return ops.squeeze(ctx.tensor(ins[0]), None if axes is None else tuple(axes))


@_imports("Unsqueeze", attrs=("axes",))
def _unsqueeze(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    x = ctx.tensor(ins[0])
    given = _axes_of(ctx, node, ins) or []
    for axis in sorted(a % (x.ndim + len(given)) for a in given):
        x = ops.expand_dims(x, axis)
    return x


@_imports("Expand")
def _expand(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    x = ctx.tensor(ins[0])
    shape = _ints(ctx.constant_array(node.input[1], "Expand's shape"))
    rank = max(len(shape), x.ndim)
    padded = [1] * (rank - len(shape)) + shape
    mine = [1] * (rank - x.ndim) + list(x.shape)
    target = [m if s == 1 else s for s, m in zip(padded, mine)]
    if any(not isinstance(d, int) for d in target):
        raise OnnxImportError("Expand of a tensor with unknown dims")
    return ops.broadcast_to(x, tuple(target))


@_imports("Pad", attrs=("mode",))
def _pad(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    if _attrs(node).get("mode", "constant") != "constant":
        raise OnnxImportError(f"Pad mode {_attrs(node)['mode']!r}")
    x = ctx.tensor(ins[0])
    pads = _ints(ctx.constant_array(node.input[1], "Pad's pads"))
    value = 0.0
    if len(ins) > 2 and ins[2] is not None and node.input[2]:
        value = float(np.asarray(ctx.constant_array(node.input[2], "Pad's value")).reshape(-1)[0])
    axes = list(range(x.ndim))
    if len(ins) > 3 and ins[3] is not None and node.input[3]:
        axes = [a % x.ndim for a in _ints(ctx.constant_array(node.input[3], "Pad's axes"))]
    half = len(pads) // 2
    widths = [(0, 0)] * x.ndim
    for k, axis in enumerate(axes):
        widths[axis] = (pads[k], pads[k + half])
    if any(w < 0 for pair in widths for w in pair):
        raise OnnxImportError("Pad with negative pads (cropping)")
    return ops.pad(x, widths, value)


@_imports("Slice")
def _slice(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    x = ctx.tensor(ins[0])
    starts = _ints(ctx.constant_array(node.input[1], "Slice's starts"))
    ends = _ints(ctx.constant_array(node.input[2], "Slice's ends"))
    axes = _ints(ctx.constant_array(node.input[3], "Slice's axes")) if len(ins) > 3 and node.input[3] else \
        list(range(len(starts)))
    steps = _ints(ctx.constant_array(node.input[4], "Slice's steps")) if len(ins) > 4 and node.input[4] else \
        [1] * len(starts)
    key = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        big = 2 ** 62
        key[axis % x.ndim] = slice(None if abs(start) >= big else start, None if abs(end) >= big else end, step)
    return x[tuple(key)]


@_imports("Gather", attrs=("axis",))
def _gather(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    axis = int(_attrs(node).get("axis", 0))
    data, indices = ctx.tensor(ins[0]), ctx.tensor(ins[1])
    if axis % data.ndim != 0 or data.ndim != 2:
        raise OnnxImportError(f"Gather along axis {axis} of a {data.ndim}-d tensor (graphnet gathers rows of a "
                              f"matrix: embeddings)")
    return ops.embedding(indices, data)


@_imports("Shape", attrs=("start", "end"))
def _shape(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    x = ins[0]
    shape = list(np.shape(x)) if not isinstance(x, Tensor) else list(x.shape)
    a = _attrs(node)
    shape = shape[a.get("start", 0):a.get("end", len(shape))]
    if not all(isinstance(d, int) for d in shape):
        raise OnnxImportError("Shape of a tensor with unknown dims (a shape computed at run time)")
    return np.array(shape, np.int64)


@_imports("Constant", attrs=("value", "value_float", "value_floats", "value_int", "value_ints"))
def _constant(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = node.attribute[0]
    if a.name == "value":
        return tensor_array(a.t, None, f"Constant {node.output[0][:80]!r}")
    value = _attrs(node)[a.name]
    dtype = np.float32 if "float" in a.name else np.int64
    return np.asarray(value, dtype)


# --- convolution, pooling, normalisation -----------------------------------------------------

def _pads(ctx: _Context, node: Any, x: Tensor, kernel: list[int], strides: list[int],
          dilations: list[int]) -> tuple[Tensor, tuple[int, int]]:
    """(input, symmetric padding): asymmetric pads become an explicit pad first."""
    a = _attrs(node)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        spatial = x.shape[2:]
        if not all(isinstance(d, int) for d in spatial):
            raise OnnxImportError(f"{node.op_type} auto_pad={auto} on unknown spatial dims")
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if auto == "SAME_UPPER" else (large, small))
        begin, end = [p[0] for p in pads], [p[1] for p in pads]
    elif auto == "VALID":
        begin, end = [0, 0], [0, 0]
    else:
        p = _ints(a.get("pads", [0, 0, 0, 0]))
        begin, end = p[:2], p[2:]
    if begin == end:
        return x, (begin[0], begin[1])
    return ops.pad(x, [(0, 0), (0, 0)] + list(zip(begin, end))), (0, 0)


@_imports("Conv", attrs=("kernel_shape", "strides", "dilations", "pads", "group", "auto_pad"))
def _conv(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = _attrs(node)
    x, w = ctx.tensor(ins[0]), ctx.tensor(ins[1])
    if x.ndim != 4:
        raise OnnxImportError(f"Conv over {x.ndim - 2}-d input (graphnet's is 2-d)")
    kernel = list(w.shape[2:])
    strides, dilations = _ints(a.get("strides", [1, 1])), _ints(a.get("dilations", [1, 1]))
    x, padding = _pads(ctx, node, x, kernel, strides, dilations)
    bias = ctx.tensor(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    return ops.conv2d(x, w, bias, tuple(strides), padding, tuple(dilations), int(a.get("group", 1)))


@_imports("ConvTranspose", attrs=("kernel_shape", "strides", "dilations", "pads", "group", "output_padding"))
def _conv_transpose(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = _attrs(node)
    x, w = ctx.tensor(ins[0]), ctx.tensor(ins[1])
    pads = _ints(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise OnnxImportError("ConvTranspose with asymmetric pads")
    bias = ctx.tensor(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    return ops.conv_transpose2d(x, w, bias, tuple(_ints(a.get("strides", [1, 1]))), tuple(pads[:2]),
                                tuple(_ints(a.get("output_padding", [0, 0]))), int(a.get("group", 1)),
                                tuple(_ints(a.get("dilations", [1, 1]))))


@_imports("MaxPool", "AveragePool", attrs=("kernel_shape", "strides", "pads", "ceil_mode", "count_include_pad",
                                           "dilations", "auto_pad", "storage_order"))
def _pool(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = _attrs(node)
    x = ctx.tensor(ins[0])
    if x.ndim != 4:
        raise OnnxImportError(f"{node.op_type} over {x.ndim - 2}-d input (graphnet's is 2-d)")
    kernel = _ints(a["kernel_shape"])
    strides = _ints(a.get("strides", [1, 1]))
    dilations = _ints(a.get("dilations", [1, 1]))
    pads = _ints(a.get("pads", [0, 0, 0, 0]))
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or pads[:2] != pads[2:]:
        raise OnnxImportError(f"{node.op_type} with asymmetric or automatic pads")
    ceil = bool(a.get("ceil_mode", 0))
    if node.op_type == "MaxPool":
        if a.get("storage_order", 0):
            raise OnnxImportError("MaxPool with storage_order=1")
        return ops.max_pool2d_ext(x, tuple(kernel), tuple(strides), tuple(pads[:2]), tuple(dilations), ceil)
    if dilations != [1, 1]:
        raise OnnxImportError("AveragePool with dilations")
    return ops.avg_pool2d_ext(x, tuple(kernel), tuple(strides), tuple(pads[:2]), ceil,
                              bool(a.get("count_include_pad", 0)))


@_imports("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    x = ctx.tensor(ins[0])
    axes = tuple(range(2, x.ndim))
    return (ops.mean if node.op_type == "GlobalAveragePool" else ops.max)(x, axes, keepdims=True)


@_imports("BatchNormalization", attrs=("epsilon", "momentum", "training_mode"))
def _batch_norm(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = _attrs(node)
    if a.get("training_mode", 0):
        raise OnnxImportError("BatchNormalization with training_mode=1")
    x, scale, bias, mean, var = (ctx.tensor(v) for v in ins[:5])
    eps = float(a.get("epsilon", 1e-5))
    if mean.op == "variable" and var.op == "variable":  # running statistics: graphnet's batch norm op
        return ops.batch_norm(x, mean, var, scale, bias, False, 0.1, eps)
    shape = (1, -1) + (1,) * (x.ndim - 2)  # statistics computed in the graph: the formula itself
    scaled = (x - ops.reshape(mean, shape)) / E.sqrt(ops.reshape(var, shape) + eps)
    return scaled * ops.reshape(scale, shape) + ops.reshape(bias, shape)


@_imports("LayerNormalization", attrs=("axis", "epsilon", "stash_type"))
def _layer_norm(ctx: _Context, node: Any, ins: list[Any]) -> Any:
    a = _attrs(node)
    x = ctx.tensor(ins[0])
    axis = int(a.get("axis", -1)) % x.ndim
    shape = tuple(x.shape[axis:])
    scale = ctx.tensor(ins[1])
    bias = ctx.tensor(ins[2]) if len(ins) > 2 and ins[2] is not None and node.input[2] else None
    eps = float(a.get("epsilon", 1e-5))
    if not (len(node.output) > 1 and any(node.output[1:])):
        return ops.layer_norm(x, shape, scale, bias, eps)
    axes = tuple(range(axis, x.ndim))  # the statistics asked for too: the formula itself
    mean = ops.mean(x, axes, keepdims=True)
    centred = x - mean
    inv_std = 1.0 / E.sqrt(ops.mean(centred * centred, axes, keepdims=True) + eps)
    y = centred * inv_std * scale
    return (y + bias if bias is not None else y), mean, inv_std


# --- the model -------------------------------------------------------------------------------

def _malformed(node: Any, opset: int) -> str | None:
    """What is wrong with ``node`` by ONNX's own schema of its op (input and output counts,
    required attributes), or None."""
    from .export import onnx_module

    defs = onnx_module().defs
    try:
        schema = defs.get_schema(node.op_type, opset, "")
    except Exception:  # no such op at this opset
        return f"{node.op_type} does not exist in opset {opset}"
    inputs, outputs = len(node.input), len(node.output)
    if not schema.min_input <= inputs <= schema.max_input:
        return f"{node.op_type} with {inputs} inputs"
    if not schema.min_output <= outputs <= schema.max_output:
        return f"{node.op_type} with {outputs} outputs"
    given = {a.name for a in node.attribute}
    missing = sorted(name for name, a in schema.attributes.items() if a.required and name not in given)
    if missing:
        return f"{node.op_type} without its attribute(s) {', '.join(missing)}"
    return None


def _check(model: Any, opset: int) -> None:
    """OnnxImportError listing every unsupported op and attribute of the model at once."""
    problems = []
    for node in model.graph.node:
        texts = (node.op_type, node.domain, node.name, *node.input, *node.output, *(a.name for a in node.attribute))
        if not all(isinstance(v, str) for v in texts):
            problems.append(f"a node whose op type or value names are not text ({node.op_type!r})")
            continue
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.op_type} of domain {node.domain!r}")
        elif node.op_type not in IMPORTERS:
            problems.append(node.op_type)
        else:
            extra = sorted({a.name for a in node.attribute} - ATTRIBUTES[node.op_type])
            if extra:
                problems.append(f"{node.op_type} attribute(s) {', '.join(extra)}")
            wrong = _malformed(node, opset)
            if wrong is not None:
                problems.append(wrong)
    graph = model.graph
    names = [v.name for v in (*graph.input, *graph.output)] + [t.name for t in graph.initializer]
    if not all(isinstance(name, str) for name in names):
        problems.append("inputs, outputs or initializers whose names are not text")
    if problems:
        counts: dict[str, int] = {}
        for p in problems:
            counts[p] = counts.get(p, 0) + 1
        listed = ", ".join(f"{p} (x{n})" if n > 1 else p for p, n in counts.items())
        raise OnnxImportError(f"graphnet cannot import: {listed}")


def _opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def load_model(model: Any, arrays: Mapping[str, np.ndarray] | None = None, *, trainable: bool = True,
               constants: Mapping[str, np.ndarray] | None = None) -> dict[str, Tensor]:
    """The outputs of an ONNX ModelProto (already checked: ``arrays`` its initializers) as
    graphnet tensors by output name. ``constants``: graph inputs to take as these fixed values
    instead of placeholders (a shape or axes fed as an input, as ONNX's node tests do)."""
    if arrays is None:
        arrays = read_initializers(model, None)
    opset = _opset(model)
    _check(model, opset)
    ctx = _Context(opset)
    graph = model.graph
    for name, array in arrays.items():
        ctx.values[name] = Parameter(array.copy(), name, trainable=trainable and array.dtype.kind == "f")
    for value in graph.input:
        if value.name in ctx.values:
            continue  # an initializer listed as an input too (older exporters)
        if constants is not None and value.name in constants:
            ctx.values[value.name] = np.asarray(constants[value.name])
            continue
        t = value.type.tensor_type
        if t.elem_type not in ELEMENT_TYPES:
            raise OnnxImportError(f"input {value.name!r} of element type {t.elem_type}")
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        ctx.values[value.name] = placeholder(value.name, dims, dtype=ELEMENT_TYPES[t.elem_type])
    for index, node in enumerate(graph.node):
        ins = [ctx.values.get(name) if name else None for name in node.input]
        missing = [name for name, v in zip(node.input, ins) if name and v is None]
        if missing:
            raise OnnxImportError(f"node {index} ({node.op_type}) reads {missing[0]!r}, which nothing before it makes")
        try:
            result = IMPORTERS[node.op_type](ctx, node, ins)
        except OnnxImportError as exc:
            raise OnnxImportError(f"node {index} ({node.op_type} {node.name!r}): {exc}") from None
        except GraphnetError as exc:
            raise OnnxImportError(f"node {index} ({node.op_type} {node.name!r}): {type(exc).__name__}: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError, OverflowError, ZeroDivisionError) as exc:
            # the file's values where the schema allows them but they make no sense (an attribute of
            # the wrong type, an empty list): refused, as any hostile input is
            raise OnnxImportError(f"node {index} ({node.op_type} {node.name!r}) is malformed: "
                                  f"{type(exc).__name__}: {str(exc)[:200]}") from None
        results = result if isinstance(result, tuple) else (result,)
        for name, value in zip(node.output, results):
            if name:
                ctx.values[name] = value
    outputs = {}
    for value in graph.output:
        found = ctx.values.get(value.name)
        if found is None:
            raise OnnxImportError(f"output {value.name!r} is never computed")
        outputs[value.name] = ctx.tensor(found)
    return outputs


def load(path: str | os.PathLike[str], *, trainable: bool = True) -> dict[str, Tensor]:
    """The ONNX model at ``path`` as graphnet tensors, by output name: compile them
    (``gn.compile(outputs)``), render, save as a plan, fine-tune. Its inputs become
    placeholders of the same names (unknown dims None), its initializers Parameters
    (``trainable=False``: frozen). Raises OnnxFileError for a malformed or hostile file and
    OnnxImportError listing everything graphnet cannot import."""
    model, arrays = read_model(path)
    return load_model(model, arrays, trainable=trainable)


def load_bytes(data: bytes, *, trainable: bool = True) -> dict[str, Tensor]:
    """``load`` for a model held in memory (no external data)."""
    model = parse(data)
    return load_model(model, read_initializers(model, None), trainable=trainable)


__all__ = ["IMPORTERS", "OnnxFileError", "load", "load_bytes", "load_model"]
