"""The optimizer interface, its validation helpers and the name registry.

How the compiled training plan uses an optimizer
------------------------------------------------
An optimizer's update rule is written with graphnet ops, once per trainable parameter,
when a training plan is compiled (the ``optimizer_updates`` pass)::

    new_param, new_state = opt.update(param, grad, state, step, h)

``param`` and ``grad`` are tensors shaped like the parameter; ``state`` maps each of
``state_names`` to a tensor read from a state variable of the plan (Adam's moments);
``step`` is a float64 scalar tensor, the 1-based count of updates including this one;
``h`` holds the hyperparameters as float64 scalar tensors (``h.lr``, ``h.betas[0]``),
read from variables of the plan, so changing ``opt.lr`` between runs takes effect at the
next run without recompiling. The pass turns the returned values into ``assign``
effects, which run after every other step: the update is part of the plan, fusion and
memory planning see it, and a saved plan runs without any optimizer code.

Non-numeric hyperparameters (``nesterov``, ``amsgrad``) and whether a numeric one is zero
decide the graph's structure: use them as Python values (``if self.weight_decay != 0``).
Changing one of those after compiling makes the plan compile its update again at the
next run, keeping parameters, optimizer state and step counts (graphnet.compile).

Hyperparameters are plain attributes, so ``opt.lr = 0.01`` (by hand or from a schedule in
:mod:`graphnet.optim.schedules`) takes effect on the next run. They are validated when
their values change.

Writing your own optimizer
--------------------------
Subclass :class:`Optimizer` and give it a ``name`` (the registry key), the
``state_names`` it keeps per parameter and an ``update``; ``@register`` makes
it reachable by name through :func:`get`::

    @register
    class SignSGD(Optimizer):
        name = "signsgd"
        state_names = ()

        def update(self, param, grad, state, step, h):
            return param - h.lr.astype(param.dtype) * gn.sign(grad), {}

``SignSGD(lr=0.01)`` then works. Extra hyperparameters may be passed as keyword
arguments (``Lion(lr=1e-4, betas=(0.9, 0.99))``), given defaults through the
class attribute ``defaults``, or declared in an ``__init__`` of your own that
calls ``super().__init__(lr, max_grad_norm=..., **hyper)``. Override
``init_state`` when state should not start at zero, and ``validate`` (calling
``super().validate()``) to check hyperparameters.

Keep the dtype of ``param``: cast the float64 hyperparameters to it (``scalar(h.lr, param)``)
after any scalar arithmetic, as PyTorch rounds its Python-float scalars.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Iterator, Mapping, TypeVar

import numpy as np

from graphnet.errors import OptimizerError
from graphnet.ops.casting import scalar  # noqa: F401 - optimizers import it from here

def check_number(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float, or raise :class:`OptimizerError`.

    ``value`` must be a finite real number (not a bool) within ``[low, high]``;
    ``low_open``/``high_open`` make the corresponding end exclusive.
    """
    ok = isinstance(value, (int, float)) or _is_real_scalar(value)
    if not ok or isinstance(value, bool):
        raise OptimizerError(f"{owner}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise OptimizerError(f"{owner}: {name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise OptimizerError(f"{owner}: {name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise OptimizerError(f"{owner}: {name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return v


def _is_real_scalar(value: Any) -> bool:
    # NumPy (or CuPy) real scalars, without importing either.
    return getattr(value, "shape", None) == () and getattr(getattr(value, "dtype", None), "kind", "") in "fiu"


def _jsonable(owner: str, key: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if _is_real_scalar(value) or getattr(getattr(value, "dtype", None), "kind", "") == "b":
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_jsonable(owner, key, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(owner, key, v) for k, v in value.items()}
    raise OptimizerError(f"{owner}: hyperparameter {key}={value!r} is not a plain JSON-able value")


def _flatten(key: str, value: Any) -> dict[str, float]:
    if _is_number(value):
        return {key: float(value)}
    if isinstance(value, (tuple, list)) and value and all(_is_number(v) for v in value):
        return {f"{key}.{i}": float(v) for i, v in enumerate(value)}
    return {}


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) or _is_real_scalar(value)) and not isinstance(value, bool)


class HyperParams:
    """Hyperparameters as float64 scalar tensors: ``h.lr``, ``h.betas`` (a tuple of tensors)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise OptimizerError(f"no numeric hyperparameter {name!r}; "
                                 f"the optimizer has {sorted(self.__dict__['_values'])}") from None


class Optimizer(ABC):
    """Base class of all optimizers; see the module docstring for the contract.

    Class attributes a subclass sets:

    ``name``
        registry key used by :func:`get` (lower case by convention).
    ``state_names``
        names of the per-parameter state arrays; :meth:`init_state` returns
        exactly these keys. A subclass whose state depends on its settings may
        make it a property (SGD keeps a momentum buffer only with momentum).
    ``defaults``
        optional default values for hyperparameters not passed to ``__init__``.
    """

    name: ClassVar[str] = ""
    state_names: tuple[str, ...] = ()
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: numeric hyperparameters whose being zero changes the update's graph (no momentum buffer)
    structural_zeros: ClassVar[tuple[str, ...]] = ()

    def __init__(self, lr: float, *, max_grad_norm: float | None = None, params: Any = None, **hyper: Any) -> None:
        if _is_number(params):  # SGD(0.1): the learning rate given first, as before parameter groups
            params, lr = None, params
        hyper = {**self.defaults, **hyper}
        for key in hyper:
            cls_attr = getattr(type(self), key, None)
            if (
                key.startswith("_")
                or key in ("lr", "max_grad_norm")
                or hasattr(Optimizer, key)
                or callable(cls_attr)
                or isinstance(cls_attr, property)
            ):
                raise OptimizerError(f"{self._label()}: {key!r} cannot be used as a hyperparameter name")
        self.lr = lr
        for key, value in hyper.items():
            setattr(self, key, value)
        self.max_grad_norm = max_grad_norm
        self._hyper_names: tuple[str, ...] = ("lr", *hyper, "max_grad_norm")
        self.param_groups: list[dict[str, Any]] = self._groups(params)
        self.validate()

    # -- parameter groups ---------------------------------------------------

    def _groups(self, params: Any) -> list[dict[str, Any]]:
        """``params`` as PyTorch takes it: None (every trainable parameter the loss reaches),
        an iterable of Parameters, or of dicts ``{"params": [...], "lr": ..., ...}``."""
        if params is None:
            return []
        items = list(params)
        if not items:
            raise OptimizerError(f"{self._label()}: got an empty list of parameters")
        groups = [dict(g) for g in items] if all(isinstance(g, Mapping) for g in items) else [{"params": items}]
        seen: dict[int, int] = {}
        for i, group in enumerate(groups):
            if "params" not in group:
                raise OptimizerError(f"{self._label()}: parameter group {i} has no 'params'")
            unknown = [k for k in group if k != "params" and k not in self._hyper_names or k == "max_grad_norm"]
            if unknown:
                raise OptimizerError(f"{self._label()}: parameter group {i} sets {unknown}, which are not "
                                     f"hyperparameters of this optimizer ({', '.join(self._hyper_names[:-1])})")
            members = group["params"]
            members = [members] if not isinstance(members, (list, tuple)) and hasattr(members, "var") else list(members)
            variables = []
            for p in members:
                var = getattr(p, "var", p)
                if not hasattr(var, "requires_grad"):
                    raise OptimizerError(f"{self._label()}: parameter group {i} holds {p!r}, not a Parameter")
                if var.id in seen:
                    raise OptimizerError(f"{self._label()}: a parameter ({var.name or var.id}) is in parameter "
                                         f"groups {seen[var.id]} and {i}; each belongs to one group")
                seen[var.id] = i
                variables.append(var)
            group["params"] = variables
        return groups

    def group_of(self, var: Any) -> int | None:
        """The index of ``var``'s parameter group: 0 without groups, None when it is in none."""
        if not self.param_groups:
            return 0
        return next((i for i, g in enumerate(self.param_groups) if any(v is var for v in g["params"])), None)

    def group_values(self, index: int) -> dict[str, Any]:
        """The hyperparameters parameter group ``index`` trains with: its own, else the optimizer's."""
        own = self.param_groups[index] if self.param_groups else {}
        return {key: own.get(key, getattr(self, key)) for key in self._hyper_names if key != "max_grad_norm"}

    @contextlib.contextmanager
    def settings(self, index: int) -> Iterator[None]:
        """The optimizer's attributes set to group ``index``'s values (so ``update`` reads them)."""
        values = self.group_values(index)
        saved = {key: getattr(self, key) for key in values}
        for key, value in values.items():
            object.__setattr__(self, key, value)
        try:
            yield
        finally:
            for key, value in saved.items():
                object.__setattr__(self, key, value)

    def _group_prefix(self, index: int) -> str:
        return f"group{index}." if self.param_groups else ""

    # -- the interface the compiler calls ---------------------------------

    def init_state(self, param: Any) -> dict[str, Any]:
        """Initial per-parameter state (host arrays): one zero array like ``param`` for each of ``state_names``."""
        return {key: np.zeros_like(param) for key in self.state_names}

    @abstractmethod
    def update(self, param: Any, grad: Any, state: Mapping[str, Any], step: Any,
               h: HyperParams) -> tuple[Any, dict[str, Any]]:
        """The new parameter and state values, as graphnet tensors (see the module docstring)."""

    def numeric_hyperparams(self) -> dict[str, float]:
        """Numeric hyperparameters flattened to scalars (``betas.0``; ``group1.lr`` with parameter
        groups): the plan's hyper variables."""
        values: dict[str, float] = {}
        groups = range(len(self.param_groups)) if self.param_groups else [0]
        for index in groups:
            prefix = self._group_prefix(index)
            for key, value in self.group_values(index).items():
                values.update({prefix + k: v for k, v in _flatten(key, value).items()})
        if _is_number(self.max_grad_norm):
            values["max_grad_norm"] = float(self.max_grad_norm)
        return values

    def structure(self) -> dict[str, Any]:
        """What the compiled update's structure depends on: non-numeric hyperparameters,
        which numeric ones listed in ``structural_zeros`` are zero, the lengths of tuples, and
        the parameter groups."""
        result: dict[str, Any] = {"max_grad_norm": "none" if self.max_grad_norm is None else "number"}
        groups = range(len(self.param_groups)) if self.param_groups else [0]
        for index in groups:
            prefix = self._group_prefix(index)
            for key, value in self.group_values(index).items():
                if _is_number(value):
                    kind = ("zero" if float(value) == 0 else "nonzero") if key in self.structural_zeros else "number"
                elif isinstance(value, (tuple, list)) and value and all(_is_number(v) for v in value):
                    kind = f"{len(value)} numbers"
                else:
                    kind = _jsonable(self._label(), key, value)
                result[prefix + key] = kind
        return result

    def hyper_tensors(self, variables: Mapping[str, Any], group: int = 0) -> HyperParams:
        """``HyperParams`` over the tensors of one group's hyper variables (``key -> Tensor``)."""
        prefix = self._group_prefix(group)
        grouped: dict[str, Any] = {}
        for key, tensor in variables.items():
            if key == "max_grad_norm" or not key.startswith(prefix):
                continue
            base, _, index = key[len(prefix):].partition(".")
            if index:
                grouped.setdefault(base, []).append(tensor)
            else:
                grouped[base] = tensor
        return HyperParams({k: tuple(v) if isinstance(v, list) else v for k, v in grouped.items()})

    # -- hyperparameters --------------------------------------------------

    def validate(self) -> None:
        """Check the hyperparameters; raise :class:`OptimizerError` if one is bad.

        Subclasses extend this (calling ``super().validate()``). It runs at the
        end of ``__init__``; call it again after changing attributes by hand.
        """
        if getattr(self, "param_groups", None) and not self.__dict__.get("_in_group"):
            for index in range(len(self.param_groups)):
                with self.settings(index):
                    self.__dict__["_in_group"] = True
                    try:
                        self.validate()
                    finally:
                        self.__dict__["_in_group"] = False
        label = self._label()
        check_number(label, "lr", self.lr, low=0.0)
        if self.max_grad_norm is not None:
            check_number(label, "max_grad_norm", self.max_grad_norm, low=0.0, low_open=True)

    def hyperparams(self) -> dict[str, Any]:
        """Hyperparameters as plain JSON-able values (tuples become lists).

        ``from_config(opt.name, opt.hyperparams())`` rebuilds an equal optimizer.
        """
        label = self._label()
        config = {key: _jsonable(label, key, getattr(self, key)) for key in self._hyper_names}
        if self.param_groups:
            config["param_groups"] = [
                {**{k: _jsonable(label, k, v) for k, v in g.items() if k != "params"},
                 "params": [var.name or f"var{var.id}" for var in g["params"]]} for g in self.param_groups]
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={getattr(self, key)!r}" for key in self._hyper_names)
        return f"{type(self).__name__}({args})"

    # -- helpers for subclasses -------------------------------------------

    def _label(self) -> str:
        return self.name or type(self).__name__

    def _state(self, state: Mapping[str, Any], key: str) -> Any:
        """``state[key]``, with a clear error if the state was built without it."""
        try:
            return state[key]
        except KeyError:
            raise OptimizerError(
                f"{self._label()}: optimizer state has no {key!r} (it has {sorted(state)}); "
                f"it was built by init_state with different settings; rebuild the plan"
            ) from None


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

_REGISTRY: dict[str, type[Optimizer]] = {}

O = TypeVar("O", bound=type[Optimizer])


def register(cls: O | None = None, *, replace: bool = False) -> O | Callable[[O], O]:
    """Class decorator adding an :class:`Optimizer` subclass to the registry under ``cls.name``.

    Use as ``@register`` or ``@register(replace=True)``; registering a second,
    different class under a taken name raises unless ``replace`` is true.
    Names are case-insensitive.
    """

    def deco(c: O) -> O:
        if not (isinstance(c, type) and issubclass(c, Optimizer)):
            raise OptimizerError(f"register expects an Optimizer subclass, got {c!r}")
        if not isinstance(c.name, str) or not c.name:
            raise OptimizerError(f"{c.__name__} needs a non-empty class attribute 'name' to be registered")
        key = c.name.lower()
        old = _REGISTRY.get(key)
        if old is not None and old is not c and not replace and (old.__module__, old.__qualname__) != (
            c.__module__,
            c.__qualname__,
        ):
            raise OptimizerError(
                f"an optimizer named {c.name!r} is already registered ({old.__module__}.{old.__qualname__}); "
                f"pass replace=True to override it"
            )
        _REGISTRY[key] = c
        return c

    return deco if cls is None else deco(cls)


def available() -> list[str]:
    """Sorted names of the registered optimizers."""
    return sorted(_REGISTRY)


def get(name: str | Optimizer, **hyper: Any) -> Optimizer:
    """Build the registered optimizer ``name`` with ``hyper`` (e.g. ``get("adam", lr=3e-4)``).

    An :class:`Optimizer` instance passed without hyperparameters is returned
    as is. Unknown names and unknown hyperparameters raise :class:`OptimizerError`.
    """
    if isinstance(name, Optimizer):
        if hyper:
            raise OptimizerError("get: hyperparameters cannot be given with an Optimizer instance")
        return name
    if not isinstance(name, str):
        raise OptimizerError(f"get: optimizer name must be a string, got {name!r}")
    cls = _REGISTRY.get(name.lower())
    if cls is None:
        raise OptimizerError(f"unknown optimizer {name!r}; known optimizers: {', '.join(available())}")
    try:
        inspect.signature(cls).bind(**hyper)
    except TypeError as exc:
        raise OptimizerError(f"bad hyperparameters for optimizer {cls.name!r}: {exc}") from None
    return cls(**hyper)


def from_config(name: str, hyper: Mapping[str, Any] | None = None,
                variables: Mapping[str, Any] | None = None) -> Optimizer:
    """Rebuild an optimizer from ``name`` and a :meth:`Optimizer.hyperparams` dict
    (``variables`` maps the parameter names its parameter groups list to Variables)."""
    if hyper is not None and not isinstance(hyper, Mapping):
        raise OptimizerError(f"from_config: hyper must be a mapping, got {hyper!r}")
    hyper = dict(hyper or {})
    # clipping lives in the base class; a user's optimizer need not take it in __init__
    clip = hyper.pop("max_grad_norm", None)
    groups = hyper.pop("param_groups", None)
    optimizer = get(name, **hyper)
    if groups is not None:
        if not isinstance(groups, list) or not all(isinstance(g, Mapping) and isinstance(g.get("params"), list)
                                                   for g in groups):
            raise OptimizerError("from_config: param_groups must be a list of {'params': [names], ...}")
        known = dict(variables or {})
        missing = [n for g in groups for n in g["params"] if n not in known]
        if missing:
            raise OptimizerError(f"from_config: parameter groups name unknown parameters {missing[:5]}")
        optimizer.param_groups = optimizer._groups(
            [{**{k: tuple(v) if isinstance(v, list) else v for k, v in g.items() if k != "params"},
              "params": [known[n] for n in g["params"]]} for g in groups])
        optimizer.validate()
    if clip is not None:
        optimizer.max_grad_norm = clip
        optimizer.validate()
    return optimizer
