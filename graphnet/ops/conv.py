"""Convolutions beyond conv2d's kernel: 1-d, transposed, and "same"/"valid" padding."""

from __future__ import annotations

from typing import Any

from ..errors import DTypeError, ShapeError
from ..ir import TensorType
from ..tensor import Tensor
from . import conv_kernels as K
from .common import declare, dims_equal, require_float
from .nn import _pair, conv2d
from .reduce import expand_dims, squeeze
from .registry import defop
from .shape import pad, reshape


def resolve_padding(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int], stride: tuple[int, int],
                    ) -> tuple[tuple[int, int], tuple[tuple[int, int], tuple[int, int]] | None]:
    """(symmetric padding for the kernel, extra explicit (before, after) padding or None).

    "valid" is no padding; "same" keeps the size at stride 1, with the odd pixel after (as
    PyTorch, and ONNX's SAME_UPPER)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), None
        if padding != "same":
            raise ShapeError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        if stride != (1, 1):
            raise ShapeError(f"padding='same' needs stride 1, got stride {stride}")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if all(t % 2 == 0 for t in totals):
            return (totals[0] // 2, totals[1] // 2), None
        return (0, 0), tuple((t // 2, t - t // 2) for t in totals)  # type: ignore[return-value]
    p = _pair(padding, "padding")
    if min(p) < 0:
        raise ShapeError(f"padding must be >= 0, got {p}")
    return p, None


def conv2d_padded(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
                  dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-d cross-correlation as PyTorch's ``F.conv2d``, with padding an int, a pair, "same" or "valid"
    ("same" pads the odd pixel after, as PyTorch and ONNX's SAME_UPPER).

    x (N, C, H, W), weight (O, C // groups, kh, kw), bias (O,) -> (N, O, Ho, Wo).
    """
    if weight.ndim != 4 or not all(isinstance(d, int) for d in weight.shape[2:]):
        return conv2d(x, weight, bias, stride, padding, dilation, groups)  # its rule gives the error
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    sym, extra = resolve_padding(padding, kernel, _pair(dilation, "dilation"), _pair(stride, "stride"))
    if extra is not None:
        x = pad(x, ((0, 0), (0, 0)) + extra)
    return conv2d(x, weight, bias, stride, sym, dilation, groups)


def conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1, padding: Any = 0,
           dilation: int = 1, groups: int = 1) -> Tensor:
    """1-d cross-correlation as PyTorch's ``F.conv1d``: x (N, C, L), weight (O, C // groups, k) -> (N, O, Lo)."""
    if x.ndim != 3 or weight.ndim != 3:
        raise ShapeError(f"conv1d expects x (N, C, L) and weight (O, C // groups, k), got {x.shape} and {weight.shape}")
    pad1 = padding if isinstance(padding, str) else (0, int(padding))
    y = conv2d_padded(expand_dims(x, 2), expand_dims(weight, 2), bias, (1, int(stride)), pad1, (1, int(dilation)),
                      groups)
    return squeeze(y, 2)


# --- transposed convolution: the adjoint of conv2d with respect to its input ------------------

def _transpose_out(size: Any, k: int, s: int, p: int, d: int, op: int) -> Any:
    if not isinstance(size, int):
        return None
    out = (size - 1) * s - 2 * p + d * (k - 1) + op + 1
    if out < 1:
        raise ShapeError(f"transposed convolution gives a spatial size of {out}")
    return out


def _ct_infer(x: TensorType, w: TensorType, *, stride: tuple, padding: tuple, dilation: tuple, groups: int,
              output_padding: tuple) -> TensorType:
    if x.ndim != 4 or w.ndim != 4:
        raise ShapeError("expected x (N, C_in, H, W) and weight (C_in, C_out // groups, kh, kw)")
    require_float(x)
    if x.dtype != w.dtype:
        raise DTypeError(f"input dtype {x.dtype} differs from weight dtype {w.dtype}")
    if not dims_equal(x.shape[1], w.shape[0]):
        raise ShapeError(f"input has {x.shape[1]} channels, the weight expects {w.shape[0]}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0 or groups < 1 or w.shape[0] % groups:
        raise ShapeError(f"bad stride {stride}, padding {padding}, dilation {dilation} or groups {groups}")
    if any(not 0 <= o < max(s, d) for o, s, d in zip(output_padding, stride, dilation)):
        raise ShapeError(f"output_padding {output_padding} must be smaller than stride or dilation")
    h = _transpose_out(x.shape[2], w.shape[2], stride[0], padding[0], dilation[0], output_padding[0])
    wd = _transpose_out(x.shape[3], w.shape[3], stride[1], padding[1], dilation[1], output_padding[1])
    return TensorType((x.shape[0], w.shape[1] * groups, h, wd), x.dtype)


class _ShapeOnly:
    """What conv2d_grad_input reads of the tensor it differentiates for: its shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def _ct_kernel(xp: Any, x: Any, w: Any, *, stride: tuple, padding: tuple, dilation: tuple, groups: int,
               output_padding: tuple) -> Any:
    out = (x.shape[0], w.shape[1] * groups) + tuple(
        (x.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w.shape[2 + i] - 1)
        + output_padding[i] + 1 for i in range(2))
    return K.conv2d_grad_input(xp, x, w, _ShapeOnly(out), stride=stride, padding=padding, dilation=dilation,
                               groups=groups)


def _ct_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...], output_padding: tuple, **attrs: Any) -> tuple:
    x, w = ins
    # y = conv2d_grad_input(x, w): linear in x (adjoint conv2d) and in w
    return declare("conv2d", [g, w], attrs), declare("conv2d_grad_weight", [g, x, w], attrs)


defop("conv_transpose2d", attrs={"stride": "pair", "padding": "pair", "dilation": "pair", "groups": "int", "output_padding": "pair"}, category="conv", infer=_ct_infer, kernel=_ct_kernel, grad=_ct_grad,
      doc="Transposed 2-d convolution (the gradient of conv2d with respect to its input).")


def conv_transpose2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """As PyTorch's ``F.conv_transpose2d``: x (N, C_in, H, W), weight (C_in, C_out // groups, kh, kw), bias
    (C_out,) -> (N, C_out, (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1, ...)."""
    attrs = {"stride": _pair(stride, "stride"), "padding": _pair(padding, "padding"),
             "dilation": _pair(dilation, "dilation"), "groups": int(groups),
             "output_padding": _pair(output_padding, "output_padding")}
    y = declare("conv_transpose2d", [x, weight], attrs)
    if bias is not None:
        y = y + reshape(bias, (1, -1, 1, 1))
    return y


def conv_transpose1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1, padding: int = 0,
                     output_padding: int = 0, groups: int = 1, dilation: int = 1) -> Tensor:
    """As PyTorch's ``F.conv_transpose1d``: x (N, C_in, L), weight (C_in, C_out // groups, k), bias (C_out,)
    -> (N, C_out, (L - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1); a
    conv_transpose2d over a height of 1."""
    if x.ndim != 3 or weight.ndim != 3:
        raise ShapeError(f"conv_transpose1d expects x (N, C_in, L) and weight (C_in, C_out // groups, k), got "
                         f"{x.shape} and {weight.shape}")
    args = {}
    for name, value in (("stride", stride), ("padding", padding), ("output_padding", output_padding),
                        ("dilation", dilation)):
        if isinstance(value, (tuple, list)):
            if len(value) != 1:
                raise ShapeError(f"conv_transpose1d: {name} must be an int or a 1-tuple, got {value!r}")
            value = value[0]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ShapeError(f"conv_transpose1d: {name} must be an int, got {value!r}")
        args[name] = value
    y = conv_transpose2d(expand_dims(x, 2), expand_dims(weight, 2), bias, (1, args["stride"]),
                         (0, args["padding"]), (0, args["output_padding"]), groups, (1, args["dilation"]))
    return squeeze(y, 2)
