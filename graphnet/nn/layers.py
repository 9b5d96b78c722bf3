"""Layers with PyTorch's constructor arguments, names, defaults and initialisations."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import ops
from ..errors import GraphnetError, ShapeError
from ..ops.nn import _pair
from ..tensor import Parameter, Tensor, constant
from . import init
from .module import Module


class Identity(Module):
    """Returns its input."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class Linear(Module):
    """``y = x @ weight.T + bias``. x (..., in_features) -> (..., out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: str = "float32") -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ShapeError(f"Linear needs positive sizes, got ({in_features}, {out_features})")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.kaiming_uniform((out_features, in_features), in_features, dtype=dtype))
        self.bias = Parameter(init.uniform((out_features,), 1 / math.sqrt(in_features), dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 1 or (isinstance(x.shape[-1], int) and x.shape[-1] != self.in_features):
            raise ShapeError(
                f"Linear({self.in_features}, {self.out_features}) in {self._path or 'model'} at "
                f"{ops.registry.user_location()}: expected input (..., {self.in_features}), got {x.shape}"
            )
        y = ops.matmul(x, ops.transpose(self.weight))
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _ConvNd(Module):
    """What every convolution layer keeps: sizes, options, and PyTorch's initialisation."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, ...], stride: Any, padding: Any,
                 dilation: Any, groups: int, bias: bool, dtype: str) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ShapeError(f"{type(self).__name__}: in_channels {in_channels} and out_channels {out_channels} "
                             f"must be divisible by groups {groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel if len(kernel) > 1 else kernel[0]
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        fan_in = in_channels // groups * math.prod(kernel)
        self.weight = Parameter(init.kaiming_uniform((out_channels, in_channels // groups) + kernel, fan_in,
                                                     dtype=dtype))
        self.bias = Parameter(init.uniform((out_channels,), 1 / math.sqrt(fan_in), dtype)) if bias else None


class Conv2d(_ConvNd):
    """2-d convolution. x (N, in_channels, H, W) -> (N, out_channels, Ho, Wo); ``padding`` also "same"/"valid"."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, dtype: str = "float32") -> None:
        super().__init__(in_channels, out_channels, _pair(kernel_size, "kernel_size"), stride, padding, dilation,
                         groups, bias, dtype)

    def forward(self, x: Tensor) -> Tensor:
        return ops.conv2d_padded(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")


class MaxPool2d(Module):
    """Max pooling; ``stride`` defaults to ``kernel_size``; ``dilation`` and ``ceil_mode`` as PyTorch."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode

    def forward(self, x: Tensor) -> Tensor:
        return ops.max_pool2d_ext(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, padding={self.padding}"


class AvgPool2d(Module):
    """Average pooling; ``stride`` defaults to ``kernel_size``; ``count_include_pad`` (default True: zero
    padding counts) and ``ceil_mode`` as PyTorch."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, x: Tensor) -> Tensor:
        return ops.avg_pool2d_ext(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                  self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, padding={self.padding}"


class MaxPool1d(MaxPool2d):
    """1-d max pooling: (N, C, L) -> (N, C, Lo); the arguments of MaxPool2d, as ints."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.max_pool1d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)


class AvgPool1d(AvgPool2d):
    """1-d average pooling: (N, C, L) -> (N, C, Lo); the arguments of AvgPool2d, as ints."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.avg_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                              self.count_include_pad)


class AdaptiveAvgPool2d(Module):
    """Average pooling of (N, C, H, W) or (C, H, W) to ``output_size`` (an int or a pair; None keeps that dim),
    over PyTorch's windows (rows floor(i * H / Ho) to ceil((i + 1) * H / Ho) - 1): any sizes."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        return ops.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Max pooling of (N, C, H, W) or (C, H, W) to ``output_size`` (an int or a pair; None keeps that dim),
    over PyTorch's windows (which overlap where the sizes do not divide). ``return_indices=True`` is
    not supported."""

    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        super().__init__()
        if return_indices:
            raise ShapeError("AdaptiveMaxPool2d: return_indices=True is not supported")
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, x: Tensor) -> Tensor:
        return ops.adaptive_max_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Upsample(Module):
    """Resampling of (N, C, H, W) to ``size`` or by ``scale_factor``, as PyTorch's ``Upsample`` (see
    ``gn.interpolate``): ``mode`` "nearest" (default), "nearest-exact", "bilinear" (``align_corners``
    False or True) or "area"."""

    def __init__(self, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                 align_corners: bool | None = None, recompute_scale_factor: bool | None = None) -> None:
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ShapeError("Upsample: give exactly one of size and scale_factor")
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, x: Tensor) -> Tensor:
        return ops.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                               self.recompute_scale_factor)

    def extra_repr(self) -> str:
        what = f"scale_factor={float(self.scale_factor)}" if isinstance(self.scale_factor, (int, float)) else \
            f"scale_factor={self.scale_factor}" if self.scale_factor is not None else f"size={self.size}"
        return f"{what}, mode={self.mode!r}"


class Conv1d(_ConvNd):
    """1-d convolution. x (N, in_channels, L) -> (N, out_channels, Lo); ``padding`` an int, "same" or "valid"."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: Any = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = True, dtype: str = "float32") -> None:
        super().__init__(in_channels, out_channels, (int(kernel_size),), stride, padding, dilation, groups, bias,
                         dtype)

    def forward(self, x: Tensor) -> Tensor:
        return ops.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


class ConvTranspose2d(Module):
    """Transposed 2-d convolution (PyTorch's arguments); weight (in_channels, out_channels // groups, kh, kw)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 output_padding: Any = 0, groups: int = 1, bias: bool = True, dilation: Any = 1,
                 dtype: str = "float32") -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ShapeError(f"ConvTranspose2d: channels {in_channels}, {out_channels} must be divisible by "
                             f"groups {groups}")
        kh, kw = _pair(kernel_size, "kernel_size")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.groups, self.dilation = groups, dilation
        fan_in = out_channels // groups * kh * kw  # PyTorch counts the weight's dim 1 as fan-in here
        self.weight = Parameter(init.kaiming_uniform((in_channels, out_channels // groups, kh, kw), fan_in,
                                                     dtype=dtype))
        self.bias = Parameter(init.uniform((out_channels,), 1 / math.sqrt(fan_in), dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return ops.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                    self.groups, self.dilation)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


class ConvTranspose1d(Module):
    """Transposed 1-d convolution (PyTorch's arguments): x (N, in_channels, L) -> (N, out_channels, Lo) with
    Lo = (L - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1; weight
    (in_channels, out_channels // groups, kernel_size), bias (out_channels,)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 output_padding: Any = 0, groups: int = 1, bias: bool = True, dilation: Any = 1,
                 dtype: str = "float32") -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ShapeError(f"ConvTranspose1d: channels {in_channels}, {out_channels} must be divisible by "
                             f"groups {groups}")
        k = kernel_size[0] if isinstance(kernel_size, (tuple, list)) and len(kernel_size) == 1 else kernel_size
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ShapeError(f"ConvTranspose1d: kernel_size must be a positive int, got {kernel_size!r}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (k,)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.groups, self.dilation = groups, dilation
        fan_in = out_channels // groups * k  # PyTorch counts the weight's dim 1 as fan-in here
        self.weight = Parameter(init.kaiming_uniform((in_channels, out_channels // groups, k), fan_in, dtype=dtype))
        self.bias = Parameter(init.uniform((out_channels,), 1 / math.sqrt(fan_in), dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return ops.conv_transpose1d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                    self.groups, self.dilation)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim`` (N(0, 1) init), indexed by integers:
    (...) -> (..., embedding_dim). ``padding_idx``: that row starts at zero and gets no gradient;
    it is read as it is (a loaded, pretrained table may hold a non-zero padding row), as PyTorch's."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        if num_embeddings < 1 or embedding_dim < 1:
            raise ShapeError(f"Embedding needs positive sizes, got ({num_embeddings}, {embedding_dim})")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ShapeError(f"padding_idx {padding_idx} is out of range for {num_embeddings} embeddings")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        table = init.normal((num_embeddings, embedding_dim), 1.0, dtype)
        if padding_idx is not None:
            table[padding_idx] = 0
        self.weight = Parameter(table)

    def forward(self, indices: Tensor) -> Tensor:
        table = self.weight
        if self.padding_idx is not None:  # the padding row reads its value but passes no gradient back
            trained = np.ones((self.num_embeddings, 1), bool)
            trained[self.padding_idx] = False
            table = ops.where(constant(trained), table, ops.stop_gradient(table))
        return ops.embedding(indices, table)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class _Activation(Module):
    def extra_repr(self) -> str:
        return ""


class ReLU(_Activation):
    """``max(x, 0)``."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class Sigmoid(_Activation):
    """Logistic function."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.sigmoid(x)


class Tanh(_Activation):
    """Hyperbolic tangent."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.tanh(x)


class GELU(_Activation):
    """Gaussian error linear unit (``approximate="tanh"`` for the tanh form)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return ops.gelu(x, self.approximate)


class LeakyReLU(_Activation):
    """``x`` if positive else ``negative_slope * x``."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return ops.leaky_relu(x, self.negative_slope)


class ELU(_Activation):
    """Exponential linear unit."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return ops.elu(x, self.alpha)


class Softmax(_Activation):
    """Softmax along ``dim``."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return ops.softmax(x, self.dim)


class SiLU(_Activation):
    """``x * sigmoid(x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.silu(x)


class Softplus(_Activation):
    """``log(1 + exp(beta * x)) / beta``, and ``x`` itself where ``beta * x > threshold``."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x: Tensor) -> Tensor:
        return ops.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Mish(_Activation):
    """``x * tanh(softplus(x))``."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.mish(x)


class PReLU(Module):
    """``x`` where positive, else ``weight * x``, with a learned slope ``weight`` (num_parameters,), all
    ``init`` at first: one slope for every element, or one per channel (axis 1) of x (N, C, ...)."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype: str = "float32") -> None:
        super().__init__()
        if num_parameters < 1:
            raise ShapeError(f"PReLU needs num_parameters >= 1, got {num_parameters}")
        self.num_parameters, self.init = num_parameters, init
        self.weight = Parameter(np.full(num_parameters, init, dtype))

    def forward(self, x: Tensor) -> Tensor:
        return ops.prelu(x, self.weight)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


class LogSoftmax(Softmax):
    """``log(softmax(x))`` along ``dim``, computed stably."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.log_softmax(x, self.dim)


class Flatten(Module):
    """Merge dims ``start_dim..end_dim`` (default: all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return ops.flatten(x, self.start_dim, self.end_dim)


class Dropout(Module):
    """Zeroes elements with probability ``p`` in training mode; the identity in eval mode."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ShapeError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return ops.dropout(x, self.p, self.mode_switch)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout2d(Dropout):
    """Zeroes whole channels of (N, C, H, W) with probability ``p`` (scaling the rest by ``1 / (1 - p)``) in
    training mode, from the plan's random source; the identity in eval mode. A (N, C, L) input drops
    channels of L, as PyTorch does."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.dropout2d(x, self.p, self.mode_switch)


class _BatchNorm(Module):
    _dims: tuple[int, ...] = (4,)
    _shape = "(N, C, H, W)"
    _sync = False

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, dtype: str = "float32") -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine else None
        if momentum is None:
            raise GraphnetError(f"{type(self).__name__}: momentum=None (a cumulative average over "
                                f"num_batches_tracked) is not supported; give a float such as 0.1")
        self.track_running_stats = track_running_stats
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            # training steps seen, as PyTorch counts them (so its state dicts load, and save back)
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self._dims or (isinstance(x.shape[1], int) and x.shape[1] != self.num_features):
            raise ShapeError(f"{type(self).__name__}({self.num_features}) in {self._path or 'model'} at "
                             f"{ops.registry.user_location()}: expected {self._shape.replace('C', str(self.num_features))}"
                             f", got {x.shape}")
        use_batch_stats = self.mode_switch if self.track_running_stats else True
        rm = self.running_mean if self.track_running_stats else None
        rv = self.running_var if self.track_running_stats else None
        if self.track_running_stats:
            x = ops.count_batches(x, self.num_batches_tracked, use_batch_stats)
        return ops.batch_norm(x, rm, rv, self.weight, self.bias, use_batch_stats, self.momentum, self.eps,
                              sync_stats=self._sync)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, H, W) per channel. x (N, C, H, W) -> same shape.

    Training mode normalises with batch statistics and updates ``running_mean`` and
    ``running_var`` after each step (momentum 0.1); eval mode uses the running values.
    The mode is read when a plan is compiled.
    """


class SyncBatchNorm(_BatchNorm):
    """Batch normalisation whose training statistics are those of every data-parallel process's
    batch together (``gn.compile(..., data_parallel=True)``; docs/distributed.md), as PyTorch's
    ``SyncBatchNorm``: x (N, C, ...) -> same shape. Each training step sums the per-channel
    sums and counts over the processes (blocking allreduces); evaluation uses the running
    values as BatchNorm does. With one process it computes what BatchNorm does.
    ``SyncBatchNorm.convert_sync_batchnorm(model)`` swaps a model's BatchNorm layers for it."""

    _dims = (2, 3, 4, 5)
    _shape = "(N, C, ...)"
    _sync = True

    @classmethod
    def convert_sync_batchnorm(cls, module: Module) -> Module:
        """``module`` with every BatchNorm1d/2d in it (or itself) replaced by a SyncBatchNorm that
        keeps its parameters and running statistics (the same Variables)."""
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            sync = cls.__new__(cls)
            sync.__dict__.update(module.__dict__)
            return sync
        for name, child in list(module._modules.items()):
            if child is not None:
                module._modules[name] = cls.convert_sync_batchnorm(child)
        return module


class BatchNorm1d(_BatchNorm):
    """Batch normalisation per channel of (N, C) or (N, C, L) inputs; as BatchNorm2d otherwise."""

    _dims = (2, 3)
    _shape = "(N, C) or (N, C, L)"


class LayerNorm(Module):
    """Normalisation over the last dims ``normalized_shape`` (biased variance), with a learned elementwise
    scale and shift (``elementwise_affine``; ``bias=False`` drops the shift)."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 dtype: str = "float32") -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.weight = Parameter(np.ones(shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(shape, dtype)) if elementwise_affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        return ops.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class GroupNorm(Module):
    """Normalisation over groups of ``num_channels // num_groups`` channels (and the spatial dims), with a
    learned scale and shift per channel (``affine``)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 dtype: str = "float32") -> None:
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ShapeError(f"GroupNorm: num_groups {num_groups} must divide num_channels {num_channels}")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = Parameter(np.ones(num_channels, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_channels, dtype)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        return ops.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


class InstanceNorm2d(Module):
    """Normalisation of each sample's channel over (H, W) (biased variance), for (N, C, H, W) or (C, H, W)
    input, with a learned scale and shift per channel where ``affine`` (``weight`` ones and ``bias``
    zeros, shape (num_features,); ``bias=False`` drops the shift). ``track_running_stats=True`` is not
    supported (ShapeError)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = False,
                 track_running_stats: bool = False, dtype: str = "float32", *, bias: bool = True) -> None:
        super().__init__()
        if track_running_stats:
            raise ShapeError("InstanceNorm2d(track_running_stats=True) is not supported: graphnet normalises with "
                             "each instance's statistics only")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in (3, 4) or (isinstance(x.shape[-3], int) and x.shape[-3] != self.num_features):
            raise ShapeError(f"InstanceNorm2d({self.num_features}) in {self._path or 'model'} at "
                             f"{ops.registry.user_location()}: expected (N, {self.num_features}, H, W) or "
                             f"({self.num_features}, H, W), got {x.shape}")
        if x.ndim == 3:
            y = ops.instance_norm(ops.expand_dims(x, 0), weight=self.weight, bias=self.bias, eps=self.eps)
            return ops.squeeze(y, 0)
        return ops.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class RMSNorm(Module):
    """Division by the root mean square over the last dims ``normalized_shape`` (``sqrt(mean(x ** 2) +
    eps)``), times a learned ``weight`` (normalized_shape, ones) where ``elementwise_affine``. ``eps=None``
    is the machine epsilon of the input's dtype, as PyTorch's."""

    def __init__(self, normalized_shape: Any, eps: float | None = None, elementwise_affine: bool = True,
                 dtype: str = "float32") -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        self.weight = Parameter(np.ones(shape, dtype)) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        return ops.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
