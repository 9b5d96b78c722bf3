"""The symbolic Tensor users hold, and the leaves of a graph: placeholders, constants, variables."""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from typing import Any, Sequence

import numpy as np

from . import dtypes
from .errors import ShapeError, SymbolicTensorError
from .ir import Dim, Node, Shape
from .ops.registry import make_node


class Tensor:
    """A symbolic value: a handle on a graph node. Arithmetic declares new nodes.

    ``shape`` may hold symbolic dims (None or a name such as ``"batch"``) bound at run time.
    """

    __array_priority__ = 100  # so ``ndarray + Tensor`` defers to Tensor.__radd__
    __slots__ = ("node", "_name")

    def __init__(self, node: Node, name: str | None = None) -> None:
        self.node = node
        self._name = name

    @property
    def shape(self) -> Shape:
        return self.node.type.shape

    @property
    def dtype(self) -> str:
        return self.node.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.node.type.shape)

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def name(self) -> str | None:
        """The user's name for this value (outputs of ``run`` are keyed by it)."""
        if self._name is not None:
            return self._name
        if self.node.op == "placeholder":
            return self.node.attrs["name"]
        if self.node.op == "variable":
            return self.node.attrs["var"].name
        return None

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value

    def named(self, name: str) -> "Tensor":
        """This value under a name; returns self for chaining."""
        self._name = name
        return self

    def __repr__(self) -> str:
        shape = "(" + ", ".join(repr(d) for d in self.shape) + ("," if self.ndim == 1 else "") + ")"
        label = f"{self.name!r}, " if self.name else ""
        return f"Tensor({label}shape={shape}, dtype={self.dtype}, op={self.op})"

    def __bool__(self) -> bool:
        raise TypeError("a symbolic Tensor has no truth value; use gn.where or comparisons as masks")

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: Any) -> "Tensor":  # type: ignore[override]
        """Elementwise ``==`` as a boolean mask, as in NumPy, JAX and PyTorch."""
        return _F().equal(self, other)

    def __ne__(self, other: Any) -> "Tensor":  # type: ignore[override]
        return _F().not_equal(self, other)

    def __len__(self) -> int:
        if not self.shape or not isinstance(self.shape[0], int):
            raise TypeError(f"len() of a tensor with shape {self.shape}")
        return self.shape[0]

    # arithmetic: defined in graphnet.ops, wired in below
    def __add__(self, other: Any) -> "Tensor":
        return _F().add(self, other)

    def __radd__(self, other: Any) -> "Tensor":
        return _F().add(other, self)

    def __sub__(self, other: Any) -> "Tensor":
        return _F().sub(self, other)

    def __rsub__(self, other: Any) -> "Tensor":
        return _F().sub(other, self)

    def __mul__(self, other: Any) -> "Tensor":
        return _F().mul(self, other)

    def __rmul__(self, other: Any) -> "Tensor":
        return _F().mul(other, self)

    def __truediv__(self, other: Any) -> "Tensor":
        return _F().div(self, other)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return _F().div(other, self)

    def __pow__(self, other: Any) -> "Tensor":
        return _F().pow(self, other)

    def __rpow__(self, other: Any) -> "Tensor":
        return _F().pow(other, self)

    def __matmul__(self, other: Any) -> "Tensor":
        return _F().matmul(self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        return _F().matmul(other, self)

    def __neg__(self) -> "Tensor":
        return _F().neg(self)

    def __abs__(self) -> "Tensor":
        return _F().abs(self)

    def __lt__(self, other: Any) -> "Tensor":
        return _F().less(self, other)

    def __le__(self, other: Any) -> "Tensor":
        return _F().less_equal(self, other)

    def __gt__(self, other: Any) -> "Tensor":
        return _F().greater(self, other)

    def __ge__(self, other: Any) -> "Tensor":
        return _F().greater_equal(self, other)

    def __getitem__(self, key: Any) -> "Tensor":
        return _F().getitem(self, key)

    # --- methods with PyTorch's meaning (the functional forms in graphnet.ops keep NumPy's:
    # gn.transpose(x, axes) permutes, gn.squeeze(x, axis) insists on size 1) ----------------

    @property
    def T(self) -> "Tensor":
        """Every dim reversed (a matrix transposed)."""
        return _F().transpose(self)

    @property
    def mT(self) -> "Tensor":  # noqa: N802 - PyTorch's name
        """The last two dims swapped (a batch of matrices transposed)."""
        return self.transpose(-2, -1)

    def reshape(self, *shape: Any) -> "Tensor":
        return _F().reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def view(self, *shape: Any) -> "Tensor":
        """As :meth:`reshape` (a static graph has no storage to share or not)."""
        return self.reshape(*shape)

    def transpose(self, *dims: int) -> "Tensor":
        """``t.transpose(a, b)`` swaps dims ``a`` and ``b``, as PyTorch's (``x @ w.transpose(0, 1)``);
        with no dims it reverses them all. To permute, use :meth:`permute` (or
        ``gn.transpose(t, axes)``, NumPy's meaning)."""
        if not dims:
            return _F().transpose(self)
        if len(dims) != 2 or not all(isinstance(d, (int, np.integer)) for d in dims):
            raise ShapeError(f"Tensor.transpose(dim0, dim1) swaps two dims, as in PyTorch; got {dims}: "
                             f"use t.permute{tuple(dims) if len(dims) > 2 else '(...)'} to reorder all of them")
        return _F().swapaxes(self, _dim(dims[0], self.ndim), _dim(dims[1], self.ndim))

    def permute(self, *dims: Any) -> "Tensor":
        """The dims reordered: result dim i is this tensor's dim ``dims[i]``."""
        order = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return _F().transpose(self, tuple(_dim(d, self.ndim) for d in order))

    def unsqueeze(self, dim: int) -> "Tensor":
        """A size-1 dim inserted at ``dim`` (of the result; negative counts from its end)."""
        return _F().expand_dims(self, _dim(dim, self.ndim + 1))

    def squeeze(self, dim: Any = None) -> "Tensor":
        """Size-1 dims removed: all statically known ones, or ``dim`` (an int or a tuple); as in
        PyTorch, a named dim whose size is known and not 1 is left as it is. An unknown dim
        (None) cannot be squeezed: its size is decided per run."""
        if dim is None:
            return _F().squeeze(self)
        dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
        axes = tuple(a for a in (_dim(d, self.ndim) for d in dims) if self.shape[a] == 1 or not isinstance(self.shape[a], int))
        return _F().squeeze(self, axes) if axes else self

    def size(self, dim: int | None = None) -> Any:
        """The shape (unknown dims as None or their names), or dim ``dim``'s size."""
        return self.shape if dim is None else self.shape[_dim(dim, self.ndim)]

    def dim(self) -> int:
        """The number of dims (``ndim``)."""
        return self.ndim

    def clamp(self, min: Any = None, max: Any = None) -> "Tensor":  # noqa: A002 - PyTorch's names
        """Values limited to [min, max]; the gradient passes where min <= x <= max, as PyTorch's."""
        if min is None and max is None:
            raise ShapeError("clamp needs min, max or both")
        out = self
        if min is not None:
            out = _F().where(out < min, min, out)
        if max is not None:
            out = _F().where(out > max, max, out)
        return out

    clip = clamp

    def detach(self) -> "Tensor":
        """The same values with no gradient flowing back through them."""
        return _F().stop_gradient(self)

    def exp(self) -> "Tensor":
        return _F().exp(self)

    def log(self) -> "Tensor":
        return _F().log(self)

    def sqrt(self) -> "Tensor":
        return _F().sqrt(self)

    def abs(self) -> "Tensor":
        return _F().abs(self)

    def tanh(self) -> "Tensor":
        return _F().tanh(self)

    def sigmoid(self) -> "Tensor":
        return _F().sigmoid(self)

    def relu(self) -> "Tensor":
        return _F().relu(self)

    # --- values: a symbolic tensor has none until a plan runs ------------------------------

    def _no_value(self, what: str) -> Any:
        raise SymbolicTensorError(
            f"{what} on {self!r}: a graphnet Tensor is symbolic, it has no value until a plan runs. "
            f"Compile and run it: plan = gn.compile({{'out': t}}); plan.run(x=...)['out']"
            + (" (training: gn.compile(loss, optimizer=...) computes the gradients and applies them at "
               "each run)" if what == ".backward()" else ""))

    def item(self) -> Any:
        return self._no_value(".item()")

    def numpy(self) -> Any:
        return self._no_value(".numpy()")

    def tolist(self) -> Any:
        return self._no_value(".tolist()")

    def backward(self, *args: Any, **kwargs: Any) -> None:
        self._no_value(".backward()")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        return self._no_value("np.asarray()")

    def __float__(self) -> float:
        return self._no_value("float()")

    def __int__(self) -> int:
        return self._no_value("int()")

    def sum(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return _F().sum(self, axis, keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return _F().mean(self, axis, keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return _F().max(self, axis, keepdims)

    def astype(self, dtype: Any) -> "Tensor":
        return _F().cast(self, dtype)


def _dim(d: Any, ndim: int) -> int:
    """A dim index, negative ones counted from the end; ShapeError when out of range."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not -ndim <= d < max(ndim, 1):
        raise ShapeError(f"dim {d!r} is out of range for a tensor of {ndim} dims")
    return int(d) % max(ndim, 1)


def _F():  # the functional ops; imported late because they import this module
    from . import ops

    return ops


def _check_shape(shape: Sequence[Dim]) -> Shape:
    result = []
    for d in shape:
        if d is None or isinstance(d, str):
            result.append(d)
        elif isinstance(d, (int, np.integer)) and d >= 0:
            result.append(int(d))
        else:
            raise ShapeError(f"bad dimension {d!r} in shape {tuple(shape)}: use ints >= 0, names, or None")
    return tuple(result)


def placeholder(name: str, shape: Sequence[Dim], dtype: Any = "float32") -> Tensor:
    """An input fed at run time. ``shape`` dims may be None or names bound per run.

    >>> x = placeholder("x", (None, 1, 28, 28))
    """
    if not isinstance(name, str) or not name:
        raise ShapeError("a placeholder needs a non-empty string name")
    node = make_node(
        "placeholder", [], {"name": name, "shape": _check_shape(shape), "dtype": dtypes.canonical(dtype)}, name=name
    )
    return Tensor(node)


class ConstValue:
    """A read-only array held in a constant node's attributes, hashed by content."""

    __slots__ = ("array", "_key")

    def __init__(self, array: np.ndarray) -> None:
        array = np.array(array, copy=True)
        array.setflags(write=False)
        self.array = array
        self._key = (array.shape, array.dtype.str, array.tobytes())

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConstValue) and self._key == other._key

    def __repr__(self) -> str:
        if self.array.size <= 4:
            return np.array2string(self.array, separator=",")
        return f"<{self.array.dtype}{list(self.array.shape)}>"


def constant(value: Any, dtype: Any = None) -> Tensor:
    """A value baked into the graph (folded at compile time where possible)."""
    array = np.asarray(value, dtype=None if dtype is None else dtypes.canonical(dtype))
    if dtype is None and array.dtype == np.float64 and not isinstance(value, np.ndarray):
        array = array.astype(np.float32)  # Python floats default to float32, as in PyTorch
    if dtype is None and array.dtype == np.int64 and not isinstance(value, np.ndarray):
        array = array.astype(np.int64)
    dtypes.canonical(array.dtype)
    node = make_node("constant", [], {"value": ConstValue(array)})
    return Tensor(node)


_variable_ids = itertools.count()
#: every Variable alive, so that a child made by fork can replace locks another thread held
_ALIVE: weakref.WeakSet = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    """In a child made by ``fork`` only the forking thread exists: a lock another thread held
    at the fork would never be released, so every Variable gets a new one."""
    for var in list(_ALIVE):
        var.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)


#: What a variable holds: a trainable parameter, a module's buffer (running statistics),
#: an optimizer's per-parameter state, a hyperparameter, or the optimizer's step counter.
VARIABLE_KINDS = ("parameter", "buffer", "optimizer_state", "hyper", "step")


class Variable:
    """Storage for a parameter or a piece of state (running statistics, optimizer state).

    Where its value lives: ``data``, one host (NumPy) array. Every NumPy plan reads and
    writes this very array, so plans compiled from the same parameters share their values,
    and values loaded here are what the next run uses. A device executor (CuPy) keeps a
    device copy per plan and writes it back to ``data`` after each run (see
    docs/architecture.md). ``key`` names what an optimizer variable is for (``exp_avg``,
    ``lr``); ``owner`` is the parameter an optimizer-state variable belongs to.
    """

    def __init__(self, data: np.ndarray, name: str | None = None, trainable: bool = True, *,
                 kind: str | None = None, key: str | None = None, owner: "Variable | None" = None) -> None:
        data = np.asarray(data)
        self._holder: Any = None  # a device executor whose copy is newer than ``_data``
        self._fetch: Any = None   # how that executor copies its value into ``_data``
        self.host_version = 0     # raised by every host access that may write ``_data``
        self.data = data if data.flags.c_contiguous else np.ascontiguousarray(data)  # (keeps 0-d arrays 0-d)
        dtypes.canonical(self._data.dtype)
        self.id = next(_variable_ids)
        self.name = name
        self.trainable = trainable
        self.kind = kind or ("parameter" if trainable else "buffer")
        if self.kind not in VARIABLE_KINDS:
            raise ShapeError(f"variable kind {self.kind!r} is not one of {VARIABLE_KINDS}")
        self.key = key
        self.owner = owner
        self.requires_grad = self.kind == "parameter"  # False: frozen (no gradient, no update)
        self.lock = threading.Lock()  # held by every plan run that reads or writes this variable
        _ALIVE.add(self)

    @property
    def data(self) -> np.ndarray:
        """The value, as a host array (a device executor's newer copy is fetched first). The
        caller may write into it, so device executors upload it again before their next run."""
        if self._holder is not None:
            self._take_back()
        self.host_version += 1
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._holder = self._fetch = None
        self._data = value
        self.host_version += 1

    def peek(self) -> np.ndarray:
        """The host array as it is, for a device executor uploading it (no fetch, no new
        version: a read that will not write)."""
        return self._data

    def hand_to_device(self, holder: Any, fetch: Any) -> None:
        """Record that ``holder`` (a device executor) now has the newest value; ``fetch(host)``
        copies it into the host array when the host next reads it."""
        self._holder, self._fetch = holder, fetch

    def held_by(self) -> Any:
        """The device executor holding a value newer than the host array, or None."""
        return self._holder

    def _take_back(self) -> None:
        fetch, self._holder, self._fetch = self._fetch, None, None
        fetch(self._data)

    def __repr__(self) -> str:
        return f"Variable({self.name or self.id}, {self._data.dtype}{list(self._data.shape)})"


def variable(var: Variable) -> Tensor:
    """A graph node reading ``var`` (passes use it for the state variables they create)."""
    node = make_node("variable", [], {"var": var, "shape": tuple(var.data.shape), "dtype": var.data.dtype.name})
    return Tensor(node)


class Parameter(Tensor):
    """A trainable (or state) tensor whose value lives in a ``Variable``."""

    __slots__ = ("var",)

    def __init__(self, data: Any, name: str | None = None, trainable: bool = True) -> None:
        var = Variable(np.asarray(data), name, trainable)
        node = make_node(
            "variable",
            [],
            {"var": var, "shape": tuple(var.data.shape), "dtype": var.data.dtype.name},
        )
        super().__init__(node)
        self.var = var

    @property
    def data(self) -> np.ndarray:
        """The current value (a NumPy array, updated in place by training plans).

        Assigning copies into that array (same shape; the dtype is kept), so every plan
        compiled from this parameter sees the new value at its next run."""
        return self.var.data

    @data.setter
    def data(self, value: Any) -> None:
        array = np.asarray(value)
        target = self.var.data
        if array.shape != target.shape:
            raise ShapeError(f"{self.var.name or 'parameter'}: cannot assign a value of shape {array.shape} "
                             f"to data of shape {target.shape}")
        if not np.can_cast(array.dtype, target.dtype, casting="same_kind"):
            raise ShapeError(f"{self.var.name or 'parameter'}: cannot assign {array.dtype} values to "
                             f"{target.dtype} data")
        np.copyto(target, array, casting="same_kind")

    @property
    def trainable(self) -> bool:
        return self.var.trainable

    @property
    def requires_grad(self) -> bool:
        """False freezes a parameter: plans compiled afterwards give it no gradient and no update."""
        return self.var.requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and self.var.kind != "parameter":
            raise ShapeError(f"{self.var.name or 'state'} is a buffer, not a trainable parameter")
        self.var.requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True) -> "Parameter":
        """Freeze (False) or unfreeze this parameter, in place, as PyTorch's; returns it. A
        training plan already compiled follows at its next run (its update compiles again)."""
        self.requires_grad = requires_grad
        return self


def as_tensor(value: Any, like: Tensor | None = None) -> Tensor:
    """Tensors pass through; Python and NumPy scalars/arrays become constants.

    A Python scalar takes the dtype of ``like`` (weak typing, as in JAX), so ``x * 2``
    stays float32.
    """
    if isinstance(value, Tensor):
        return value
    if like is not None and isinstance(value, (int, float, bool)) and not isinstance(value, np.ndarray):
        target = like.dtype
        if isinstance(value, float) and not dtypes.is_float(target):
            target = "float32"
        return constant(value, target)
    return constant(value)
