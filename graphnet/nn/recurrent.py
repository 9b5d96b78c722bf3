"""Recurrent layers on ``gn.scan``: ``RNN``, ``LSTM`` and ``GRU`` with PyTorch's arguments,
parameter names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), shapes and gate order, so a
PyTorch state dict converted to NumPy loads as is.

Each layer and direction is one scan whose body is one time step; the input projection of
every step (``x @ weight_ih.T + bias_ih``) is one matrix product before the loop, so the body
holds only the recurrent product and the cell's arithmetic. The plan does not grow with the
sequence length.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .. import ops
from ..errors import ShapeError
from ..ops.control import scan
from ..tensor import Parameter, Tensor, constant
from . import init
from .module import Module

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


class _RNNBase(Module, ABC):
    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: str = "float32") -> None:
        super().__init__()
        name = type(self).__name__
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ShapeError(f"{name} needs positive sizes, got input_size={input_size}, "
                             f"hidden_size={hidden_size}, num_layers={num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ShapeError(f"{name}: dropout must be in [0, 1), got {dropout}")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        gates = _GATES[mode] * hidden_size
        bound = 1.0 / math.sqrt(hidden_size)  # PyTorch's: every weight and bias uniform in +-1/sqrt(H)
        self._names: list[list[tuple[str, ...]]] = []
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * self.directions
            names = []
            for suffix in ("", "_reverse")[:self.directions]:
                own = (f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}",
                       f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}")
                setattr(self, own[0], Parameter(init.uniform((gates, width), bound, dtype)))
                setattr(self, own[1], Parameter(init.uniform((gates, hidden_size), bound, dtype)))
                if bias:
                    setattr(self, own[2], Parameter(init.uniform((gates,), bound, dtype)))
                    setattr(self, own[3], Parameter(init.uniform((gates,), bound, dtype)))
                names.append(own)
            self._names.append(names)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @abstractmethod
    def _cell(self, carry: Any, projected: Tensor, w_hh_t: Tensor, b_hh: Tensor | None) -> tuple[Any, Tensor]:
        """One time step: (the carry, this step's input product, W_hh^T, b_hh) -> (new carry, output)."""

    def _initial(self, hx: Any, like: Tensor) -> list[Any]:
        """One initial carry per layer and direction: ``hx`` split, or zeros shaped like ``like`` (N, H)."""
        count = self.num_layers * self.directions
        zeros = ops.broadcast_like(constant(np.zeros(self.hidden_size, self.weight_hh_l0.data.dtype)), like)
        if hx is None:
            return [(zeros, zeros) if self.mode == "LSTM" else zeros for _ in range(count)]
        parts = hx if self.mode == "LSTM" else (hx,)
        if self.mode == "LSTM" and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise ShapeError("LSTM takes hx as a pair (h_0, c_0)")
        for part in parts:
            if part.ndim != 3 or (isinstance(part.shape[0], int) and part.shape[0] != count) or (
                    isinstance(part.shape[2], int) and part.shape[2] != self.hidden_size):
                raise ShapeError(f"{type(self).__name__}: the initial state must be ({count}, N, "
                                 f"{self.hidden_size}), got {part.shape}")
        if self.mode == "LSTM":
            return [(hx[0][k], hx[1][k]) for k in range(count)]
        return [hx[k] for k in range(count)]

    def forward(self, x: Tensor, hx: Any = None) -> tuple[Tensor, Any]:
        """x (L, N, input_size), or (N, L, input_size) with ``batch_first``; ``hx``: h_0 of shape
        (num_layers * directions, N, hidden_size) (LSTM: the pair (h_0, c_0)), zeros by
        default. Returns (output (L, N, directions * hidden_size) (batch first if asked),
        h_n (num_layers * directions, N, hidden_size); LSTM: (h_n, c_n))."""
        name = type(self).__name__
        if x.ndim != 3 or (isinstance(x.shape[2], int) and x.shape[2] != self.input_size):
            raise ShapeError(f"{name}({self.input_size}, {self.hidden_size}) in {self._path or 'model'} at "
                             f"{ops.registry.user_location()}: expected (L, N, {self.input_size})"
                             f"{' batch first' if self.batch_first else ''}, got {x.shape}")
        seq = ops.swapaxes(x, 0, 1) if self.batch_first else x
        carries: list[Any] = []
        finals: list[Any] = []
        layer_input = seq
        for layer in range(self.num_layers):
            outputs = []
            for direction, names in enumerate(self._names[layer]):
                w_ih, w_hh, b_ih, b_hh = (getattr(self, n) if hasattr(self, n) else None for n in names)
                projected = ops.matmul(layer_input, ops.transpose(w_ih))  # every step's input product at once
                if b_ih is not None:
                    projected = projected + b_ih
                w_hh_t = ops.transpose(w_hh)
                if not carries:  # (N, H) zeros need the batch size: a view of the first step's product
                    carries = self._initial(hx, projected[0][:, :self.hidden_size])
                final, ys = scan(lambda c, p, w=w_hh_t, b=b_hh: self._cell(c, p, w, b),
                                 carries[layer * self.directions + direction], projected, reverse=direction == 1)
                finals.append(final)
                outputs.append(ys)
            layer_input = outputs[0] if len(outputs) == 1 else ops.concat(outputs, axis=2)
            if self.dropout and layer < self.num_layers - 1:
                layer_input = ops.dropout(layer_input, self.dropout, training=self.mode_switch)
        output = ops.swapaxes(layer_input, 0, 1) if self.batch_first else layer_input
        stack = (lambda values: ops.concat([ops.expand_dims(v, 0) for v in values], axis=0))
        if self.mode == "LSTM":
            return output, (stack([h for h, _ in finals]), stack([c for _, c in finals]))
        return output, stack(finals)

    def extra_repr(self) -> str:
        extras = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            extras.append(f"num_layers={self.num_layers}")
        if self.batch_first:
            extras.append("batch_first=True")
        if self.dropout:
            extras.append(f"dropout={self.dropout}")
        if self.bidirectional:
            extras.append("bidirectional=True")
        return ", ".join(extras)


def _recurrent(h: Tensor, w_hh_t: Tensor, b_hh: Tensor | None) -> Tensor:
    product = ops.matmul(h, w_hh_t)
    return product + b_hh if b_hh is not None else product


class RNN(_RNNBase):
    """Elman RNN: ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, act ``tanh`` or ``relu``;
    PyTorch's ``nn.RNN`` arguments, parameters and outputs."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: str = "float32") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ShapeError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, dtype)
        self.nonlinearity = nonlinearity

    def _cell(self, h: Tensor, projected: Tensor, w_hh_t: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
        pre = projected + _recurrent(h, w_hh_t, b_hh)
        new = ops.tanh(pre) if self.nonlinearity == "tanh" else ops.relu(pre)
        return new, new


class LSTM(_RNNBase):
    """Long short-term memory, gates in PyTorch's order (input, forget, cell, output):
    ``c' = f * c + i * g``, ``h' = o * tanh(c')``; PyTorch's ``nn.LSTM`` arguments, parameters
    and outputs ``(output, (h_n, c_n))``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: str = "float32") -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype)

    def _cell(self, carry: Any, projected: Tensor, w_hh_t: Tensor, b_hh: Tensor | None) -> tuple[Any, Tensor]:
        h, c = carry
        gates = projected + _recurrent(h, w_hh_t, b_hh)
        size = self.hidden_size
        i, f, g, o = (gates[:, k * size:(k + 1) * size] for k in range(4))
        c_new = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        h_new = ops.sigmoid(o) * ops.tanh(c_new)
        return (h_new, c_new), h_new


class GRU(_RNNBase):
    """Gated recurrent unit, gates in PyTorch's order (reset, update, new):
    ``n = tanh(x_n + r * (h W_hn^T + b_hn))``, ``h' = (1 - z) * n + z * h``; PyTorch's
    ``nn.GRU`` arguments, parameters and outputs."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: str = "float32") -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype)

    def _cell(self, h: Tensor, projected: Tensor, w_hh_t: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
        size = self.hidden_size
        recurrent = _recurrent(h, w_hh_t, b_hh)
        r = ops.sigmoid(projected[:, :size] + recurrent[:, :size])
        z = ops.sigmoid(projected[:, size:2 * size] + recurrent[:, size:2 * size])
        n = ops.tanh(projected[:, 2 * size:] + r * recurrent[:, 2 * size:])
        new = (1.0 - z) * n + z * h
        return new, new
