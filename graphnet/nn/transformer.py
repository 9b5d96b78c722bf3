"""Attention and Transformer layers with PyTorch's names, arguments, parameter names and shapes
(a PyTorch state dict converted to NumPy arrays loads as is).

The heads are one batch dim: the projections are one product each (self-attention: one product
with the packed ``in_proj_weight``), their results are reshaped to (N, heads, L, head_dim), and
attention is the one ``scaled_dot_product_attention`` op over every batch and head (blocked, so
long sequences never hold their (L, S) scores). Only ``need_weights=True`` computes the (N, heads,
L, S) probabilities, with plain ops, since it returns them.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import numpy as np

from .. import ops
from ..errors import GraphnetError, ShapeError
from ..ops.attention import attention
from ..tensor import Parameter, Tensor, constant
from . import init
from .layers import Dropout, LayerNorm, Linear
from .module import Module, ModuleList


def _xavier_uniform(shape: tuple[int, int], dtype: str) -> np.ndarray:
    """PyTorch's ``xavier_uniform_``: U(-a, a), a = sqrt(6 / (fan_in + fan_out))."""
    fan_out, fan_in = shape
    return init.uniform(shape, math.sqrt(6.0 / (fan_in + fan_out)), dtype)


def _reshape_tail(x: Tensor, n: int, tail: tuple[int, ...]) -> Tensor:
    """``x`` with its last ``n`` dims replaced by ``tail`` (same element count), the leading dims
    kept whatever they are: a reshape where at most one of them is unknown, else a reshape to
    the run-time shape of a broadcast view (a reshape takes one unknown dim only)."""
    lead = tuple(x.shape[:x.ndim - n])
    if sum(not isinstance(d, int) for d in lead) <= 1:
        return ops.reshape(x, tuple(-1 if d is None else d for d in lead) + tail)
    probe = x[(slice(None),) * len(lead) + (slice(0, 1),) * n]  # lead + (1,) * n, a view
    probe = ops.squeeze(probe, tuple(range(len(lead), x.ndim)))
    probe = ops.expand_dims(probe, tuple(range(len(lead), len(lead) + len(tail))))
    like = ops.broadcast_like(constant(np.zeros(tail, x.dtype)), probe)
    return ops.reshape_like(x, like)


def _not(mask: Tensor) -> Tensor:
    """The bool mask's negation (PyTorch's MultiheadAttention masks say True where NOT to attend;
    the attention op's bool masks say True where to attend, as F.scaled_dot_product_attention's)."""
    return ops.equal(mask, constant(np.array(False)))


class MultiheadAttention(Module):
    """As ``torch.nn.MultiheadAttention``: ``embed_dim`` split into ``num_heads`` heads.

    Parameters: ``in_proj_weight`` (3E, E) (with ``kdim``/``vdim`` other than E:
    ``q_proj_weight`` (E, E), ``k_proj_weight`` (E, kdim), ``v_proj_weight`` (E, vdim)),
    ``in_proj_bias`` (3E), ``out_proj.weight`` (E, E), ``out_proj.bias`` (E); PyTorch's
    initialisation (xavier-uniform projections, zero biases). Inputs (L, N, E), or (N, L, E)
    with ``batch_first``, or unbatched (L, E). ``dropout`` drops attention probabilities in
    training, inside the attention op, from the plan's random source.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, dtype: str = "float32") -> None:
        super().__init__()
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ShapeError(f"MultiheadAttention: embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ShapeError(f"MultiheadAttention: dropout must be in [0, 1), got {dropout}")
        if add_bias_kv or add_zero_attn:
            raise GraphnetError("MultiheadAttention: add_bias_kv and add_zero_attn are not supported")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, float(dropout)
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.head_dim = embed_dim // num_heads
        self.batch_first = batch_first
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(_xavier_uniform((3 * embed_dim, embed_dim), dtype))
        else:
            self.q_proj_weight = Parameter(_xavier_uniform((embed_dim, embed_dim), dtype))
            self.k_proj_weight = Parameter(_xavier_uniform((embed_dim, self.kdim), dtype))
            self.v_proj_weight = Parameter(_xavier_uniform((embed_dim, self.vdim), dtype))
        self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        if bias:
            self.out_proj.bias.data = np.zeros(embed_dim, dtype)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, " \
               f"batch_first={self.batch_first}"

    # --- projections --------------------------------------------------------------------------
    def _weight(self, i: int) -> Tensor:
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            return self.in_proj_weight[i * e:(i + 1) * e]
        return (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[i]

    def _project(self, x: Tensor, first: int, count: int) -> list[Tensor]:
        """x (..., in) through projections first .. first + count - 1 (q, k, v) as one product,
        each result (N, heads, length, head_dim) from x (L, N, ...) or, batch_first, (N, L, ...)."""
        e, h, d = self.embed_dim, self.num_heads, self.head_dim
        whole = count == 3  # the packed weight and bias as they are (no slice, no slice gradient)
        if count > 1:
            weight = self.in_proj_weight if whole else self.in_proj_weight[first * e:(first + count) * e]
        else:
            weight = self._weight(first)
        y = ops.matmul(x, ops.transpose(weight))
        if self.in_proj_bias is not None:
            y = y + (self.in_proj_bias if whole else self.in_proj_bias[first * e:(first + count) * e])
        y = _reshape_tail(y, 1, (count, h, d))  # (L, N, count, heads, d) or (N, L, ...)
        order = (2, 0, 3, 1, 4) if self.batch_first else (2, 1, 3, 0, 4)
        y = ops.transpose(y, order)  # (count, N, heads, L, d)
        return [y[i] for i in range(count)]

    def _check(self, what: str, t: Tensor, features: int, batched: bool) -> None:
        want = 3 if batched else 2
        if t.ndim != want or (isinstance(t.shape[-1], int) and t.shape[-1] != features):
            layout = ("(N, L, E)" if self.batch_first else "(L, N, E)") if batched else "(L, E)"
            raise ShapeError(f"MultiheadAttention({self.embed_dim}, {self.num_heads}) in {self._path or 'model'} at "
                             f"{ops.registry.user_location()}: {what} must be {layout} with E = {features}, "
                             f"got {t.shape}")

    # --- masks --------------------------------------------------------------------------------
    def _masks(self, key_padding_mask: Any, attn_mask: Any, dtype: str) -> list[Tensor]:
        """PyTorch's masks as the attention op's: bool True (not allowed) negated, float added;
        key_padding_mask (N, S) -> (N, 1, 1, S), attn_mask (L, S) or (N * heads, L, S) -> (N, heads, L, S)."""
        masks = []
        for mask, key in ((attn_mask, False), (key_padding_mask, True)):
            if mask is None:
                continue
            if not isinstance(mask, Tensor):
                array = np.asarray(mask)
                mask = constant(array, "bool" if array.dtype == np.bool_ else dtype)
            if mask.dtype != "bool" and mask.dtype != dtype:
                mask = ops.cast(mask, dtype)
            if key:
                if mask.ndim != 2:
                    raise ShapeError(f"key_padding_mask must be (N, S), got {mask.shape}")
                mask = ops.expand_dims(mask, (1, 2))
            elif mask.ndim == 3:
                rest = tuple(d if isinstance(d, int) else -1 for d in mask.shape[1:])
                if -1 in rest:
                    raise ShapeError(f"a 3-d attn_mask needs static L and S, got {mask.shape}")
                mask = ops.reshape(mask, (-1, self.num_heads) + rest)
            elif mask.ndim != 2:
                raise ShapeError(f"attn_mask must be (L, S) or (N * num_heads, L, S), got {mask.shape}")
            masks.append(_not(mask) if mask.dtype == "bool" else mask)
        return masks

    # --- forward ------------------------------------------------------------------------------
    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Any = None,
                need_weights: bool = False, attn_mask: Any = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """(attn_output, attn_weights): attn_output like ``query``; attn_weights None unless
        ``need_weights`` (then (N, L, S) averaged over heads, or (N, heads, L, S)).

        Masks as PyTorch's: ``key_padding_mask`` (N, S) and ``attn_mask`` (L, S) or
        (N * num_heads, L, S), bool True where a key is NOT attended to, or float added to the
        scores. ``is_causal`` without ``attn_mask``: row i attends to keys j <= i (with one, the
        mask is used as given, as PyTorch takes the flag as a hint about it).
        """
        batched = query.ndim == 3
        self._check("query", query, self.embed_dim, batched)
        self._check("key", key, self.kdim, batched)
        self._check("value", value, self.vdim, batched)
        if not batched:  # (L, E): one sequence, a batch of one where the layout puts it
            axis = 0 if self.batch_first else 1
            query, key, value = (ops.expand_dims(t, axis) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = ops.expand_dims(key_padding_mask, 0) if isinstance(key_padding_mask, Tensor) \
                    else np.asarray(key_padding_mask)[None]
        if self._qkv_same_embed_dim and query is key and key is value:
            q, k, v = self._project(query, 0, 3)
        elif self._qkv_same_embed_dim and key is value:
            (q,), (k, v) = self._project(query, 0, 1), self._project(key, 1, 2)
        else:
            (q,), (k,), (v,) = self._project(query, 0, 1), self._project(key, 1, 1), self._project(value, 2, 1)
        masks = self._masks(key_padding_mask, attn_mask, q.dtype)
        causal = bool(is_causal) and attn_mask is None
        scale = 1.0 / math.sqrt(self.head_dim)
        if need_weights:
            out, weights = self._plain(q, k, v, masks, causal, scale)
            weights = ops.mean(weights, 1) if average_attn_weights else weights
            if not batched:
                weights = ops.squeeze(weights, 0)
        else:
            out = attention(q, k, v, masks, causal=causal, scale=scale, dropout_p=self.dropout,
                            training=self.mode_switch)
            weights = None
        order = (0, 2, 1, 3) if self.batch_first else (2, 0, 1, 3)
        out = _reshape_tail(ops.transpose(out, order), 2, (self.embed_dim,))  # (N, L, E) or (L, N, E)
        out = self.out_proj(out)
        if not batched:
            out = ops.squeeze(out, 0 if self.batch_first else 1)
        return out, weights

    def _plain(self, q: Tensor, k: Tensor, v: Tensor, masks: list[Tensor], causal: bool,
               scale: float) -> tuple[Tensor, Tensor]:
        """The attention output and its probabilities (N, heads, L, S), with plain ops (after
        dropout, as PyTorch returns them)."""
        s = ops.matmul(q, ops.swapaxes(k, -1, -2)) * scale
        for m in masks:
            s = ops.where(m, s, -np.inf) if m.dtype == "bool" else s + m
        if causal:
            rows, keys = q.shape[-2], k.shape[-2]
            if not isinstance(rows, int) or not isinstance(keys, int):
                raise ShapeError("need_weights=True with is_causal needs static sequence lengths")
            s = ops.where(constant(np.tril(np.ones((rows, keys), bool))), s, -np.inf)
        weights = ops.dropout(ops.softmax(s, -1), self.dropout, self.mode_switch)
        return ops.matmul(weights, v), weights


def _activation(activation: Any) -> Callable[[Tensor], Tensor]:
    if callable(activation):
        return activation
    if activation == "relu":
        return ops.relu
    if activation == "gelu":
        return ops.gelu
    raise GraphnetError(f"activation should be relu/gelu, not {activation!r}")


class TransformerEncoderLayer(Module):
    """As ``torch.nn.TransformerEncoderLayer``: self-attention then a feed-forward block, each with
    dropout, a residual connection and LayerNorm (after, or with ``norm_first`` before).
    Submodules ``self_attn``, ``linear1``, ``dropout``, ``linear2``, ``norm1``, ``norm2``,
    ``dropout1``, ``dropout2``; ``activation`` "relu", "gelu" or a function."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: Any = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, dtype: str = "float32") -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation)

    def forward(self, src: Tensor, src_mask: Any = None, src_key_padding_mask: Any = None,
                is_causal: bool = False) -> Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))

    def _sa_block(self, x: Tensor, attn_mask: Any, key_padding_mask: Any, is_causal: bool) -> Tensor:
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerDecoderLayer(Module):
    """As ``torch.nn.TransformerDecoderLayer``: self-attention, attention over ``memory``, then a
    feed-forward block, each with dropout, a residual connection and LayerNorm (after, or with
    ``norm_first`` before). Submodules ``self_attn``, ``multihead_attn``, ``linear1``, ``dropout``,
    ``linear2``, ``norm1`` .. ``norm3``, ``dropout1`` .. ``dropout3``."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: Any = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, dtype: str = "float32") -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            dtype=dtype)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = _activation(activation)

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Any = None, memory_mask: Any = None,
                tgt_key_padding_mask: Any = None, memory_key_padding_mask: Any = None,
                tgt_is_causal: bool = False, memory_is_causal: bool = False) -> Tensor:
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            return x + self._ff_block(self.norm3(x))
        x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
        x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
        return self.norm3(x + self._ff_block(x))

    def _sa_block(self, x: Tensor, attn_mask: Any, key_padding_mask: Any, is_causal: bool) -> Tensor:
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=is_causal,
                           need_weights=False)[0]
        return self.dropout1(x)

    def _mha_block(self, x: Tensor, mem: Tensor, attn_mask: Any, key_padding_mask: Any, is_causal: bool) -> Tensor:
        x = self.multihead_attn(x, mem, mem, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                is_causal=is_causal, need_weights=False)[0]
        return self.dropout2(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))


def _clone(module: Module) -> Module:
    """A deep copy of ``module`` with parameters and buffers of its own (new Variables holding
    copies of the values, as PyTorch's ``copy.deepcopy`` of a layer)."""
    memo: dict[int, Any] = {}
    for _, p in list(module.named_parameters()) + list(module.named_buffers()):
        fresh = Parameter(np.array(p.data, copy=True), trainable=p.trainable)
        fresh.var.requires_grad = p.var.requires_grad
        memo[id(p)] = fresh
    clone = copy.deepcopy(module, memo)
    for m in clone.modules():
        m.__dict__.pop("_mode_switch", None)  # the copy's own, made when first asked for
        object.__setattr__(m, "_path", "")
    return clone


class TransformerEncoder(Module):
    """As ``torch.nn.TransformerEncoder``: ``num_layers`` copies of ``encoder_layer`` (``layers.0``,
    ``layers.1``, ...; each a deep copy with parameters of its own, starting from the layer's
    values as PyTorch's), then ``norm`` if given."""

    def __init__(self, encoder_layer: Module, num_layers: int, norm: Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        super().__init__()
        self.layers = ModuleList([_clone(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src: Tensor, mask: Any = None, src_key_padding_mask: Any = None,
                is_causal: bool | None = None) -> Tensor:
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return self.norm(x) if self.norm is not None else x


class TransformerDecoder(Module):
    """As ``torch.nn.TransformerDecoder``: ``num_layers`` copies of ``decoder_layer`` (``layers.0``, ...),
    then ``norm`` if given."""

    def __init__(self, decoder_layer: Module, num_layers: int, norm: Module | None = None) -> None:
        super().__init__()
        self.layers = ModuleList([_clone(decoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Any = None, memory_mask: Any = None,
                tgt_key_padding_mask: Any = None, memory_key_padding_mask: Any = None,
                tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> Tensor:
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask, tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=bool(tgt_is_causal),
                      memory_is_causal=memory_is_causal)
        return self.norm(x) if self.norm is not None else x
