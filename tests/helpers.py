"""Shared helpers for the op tables in test_op_gradients.py and test_op_forward.py.

Feeding placeholders, compiling and running plans (recording which ops the plans ran),
central finite differences by re-running a compiled forward plan, and error measures.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import numpy as np

import graphnet as gn
from graphnet import dtypes
from graphnet.ir import Node, topological_order
from graphnet.ops.registry import REGISTRY

# --- elementwise ops, as the scalar-form and kernel-generator tests take them ---------------

ELEMENTWISE = sorted(name for name, op in REGISTRY.items() if op.category == "elementwise" and name != "fused")
#: attributes an op needs to be rendered, one value each
SCALAR_ATTRS = {"cast": {"dtype": "float64"}, "leaky_relu": {"alpha": 0.1}, "elu": {"alpha": 1.5},
                "gelu": {"approximate": "tanh"}, "softplus": {"beta": 1.5, "threshold": 3.0}}


def elementwise_arity(name: str) -> int:
    """How many operands the elementwise op ``name`` takes."""
    if name == "where":
        return 3
    return 2 if name in ("add", "sub", "mul", "div", "pow", "maximum", "minimum") or \
        REGISTRY[name].operands == "common" else 1


# --- placeholders and plans ------------------------------------------------------------------


def placeholders(feeds: Mapping[str, np.ndarray], shapes: Mapping[str, tuple] | None = None) -> dict[str, gn.Tensor]:
    """One placeholder per feed, with the feed's dtype and shape (or a symbolic ``shapes[name]``)."""
    shapes = shapes or {}
    return {name: gn.placeholder(name, shapes.get(name, np.shape(a)), dtype=np.asarray(a).dtype.name)
            for name, a in feeds.items()}


_recorders: list[set[str]] = []


def compile_plan(outputs: Any, **kwargs: Any) -> gn.CompiledPlan:
    """``gn.compile`` that also records the ops of the compiled steps (see ``covers``)."""
    plan = gn.compile(outputs, **kwargs)
    ops = step_ops(plan)
    for rec in _recorders:
        rec.update(ops)
    return plan


def step_ops(plan: gn.CompiledPlan) -> set[str]:
    """The ops a plan's steps run, the members of fused groups included."""
    ops = {step.op for step in plan.plan.steps}
    return ops | {member[0] for step in plan.plan.steps if step.op in ("fused", "fused_assign")
                  for member in step.attrs["body"]}


def only_feeds(plan: gn.CompiledPlan, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``feeds`` that ``plan`` takes (plans reject unexpected feeds)."""
    return {k: v for k, v in feeds.items() if k in plan.plan.feeds}


def run(outputs: Mapping[str, gn.Tensor], feeds: Mapping[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
    """Compile ``outputs`` (a dict) and run the plan once on ``feeds``."""
    return compile_plan(dict(outputs), **kwargs).run(dict(feeds))


#: op name -> names of the tests declaring (with ``covers``) that they run its kernel
COVERED: dict[str, list[str]] = {}


def covers(*ops: str) -> Callable:
    """Declare that a test runs the kernels of ``ops``; checked at the end of the test.

    The test must compile (through ``compile_plan``/``run``) at least one plan whose steps
    contain each op, so a pass that folds or simplifies an op away cannot hide it.
    """

    def deco(fn: Callable) -> Callable:
        for op in ops:
            COVERED.setdefault(op, []).append(fn.__name__)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen: set[str] = set()
            _recorders.append(seen)
            try:
                result = fn(*args, **kwargs)
            finally:
                _recorders.remove(seen)
            missing = sorted(set(ops) - seen)
            assert not missing, f"{fn.__name__} declares it covers {missing}, but no plan it compiled ran them"
            return result

        return wrapper

    return deco


# --- numerics ---------------------------------------------------------------------------------


def finite_difference(plan: gn.CompiledPlan, key: str, feeds: Mapping[str, np.ndarray], name: str,
                      eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar output ``key`` of ``plan`` w.r.t. feed ``name``."""
    feeds = only_feeds(plan, feeds)
    x = np.array(feeds[name], dtype=np.float64, copy=True)
    feeds[name] = x
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        orig = x[idx]
        x[idx] = orig + eps
        fp = float(plan.run(feeds)[key])
        x[idx] = orig - eps
        fm = float(plan.run(feeds)[key])
        x[idx] = orig
        grad[idx] = (fp - fm) / (2 * eps)
    return grad


def rel_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = 0.0) -> float:
    """max |a - n| / max(max |a|, max |n|, floor); 0 when both are exactly zero."""
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    diff = float(np.max(np.abs(analytic - numeric))) if analytic.size else 0.0
    scale = max(float(np.max(np.abs(analytic))) if analytic.size else 0.0,
                float(np.max(np.abs(numeric))) if numeric.size else 0.0, floor)
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


def assert_close(got: np.ndarray, want: np.ndarray, dtype: str | None = None, rtol: float | None = None,
                 atol: float | None = None) -> None:
    """Compare a kernel's output with a float64 reference, at a tolerance fitting ``dtype``."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    if dtype is not None:
        assert got.dtype == np.dtype(dtype), f"dtype {got.dtype} != expected {dtype}"
    kind = got.dtype
    if rtol is None:
        rtol = 1e-12 if kind == np.float64 else 2e-6 if kind == np.float32 else 0.0
    if atol is None:
        atol = 1e-12 if kind == np.float64 else 2e-6 if kind == np.float32 else 0.0
    np.testing.assert_allclose(got.astype(np.float64) if kind.kind == "f" else got, want, rtol=rtol, atol=atol)


# --- graph inspection ---------------------------------------------------------------------------


def differentiated_ops(y: Node, wrt: list[Node]) -> set[str]:
    """Ops whose gradient rule ``gn.grad(y, wrt)`` invokes: float nodes on a path from ``wrt``
    to ``y`` that have at least one such input (mirrors graphnet.passes.autodiff)."""
    live = {w.uid for w in wrt}
    ops = set()
    for node in topological_order([y]):
        if node.uid in live or not any(dtypes.is_float(t.dtype) for t in node.types):
            continue
        if any(i.uid in live for i in node.inputs):
            live.add(node.uid)
            ops.add(node.op)
    return ops


# --- optimizers: one update evaluated through its graph -------------------------------------------


def step_in_place(opt: Any, param: np.ndarray, grad: np.ndarray, state: dict[str, np.ndarray], step: int) -> None:
    """Apply ``opt``'s update rule (as compiled into training plans) to NumPy arrays, in place.

    Builds the rule's graph over placeholders (parameter, gradient, each state slot, the
    float64 step and hyperparameters at their current values), compiles it and runs it.
    """
    p = gn.placeholder("param", param.shape, param.dtype.name)
    g = gn.placeholder("grad", grad.shape, grad.dtype.name)
    slots = {k: gn.placeholder(f"state_{k}", v.shape, v.dtype.name) for k, v in state.items()}
    t = gn.placeholder("step", (), "float64")
    values = opt.numeric_hyperparams()
    hyper = {k: gn.placeholder(f"hyper_{k.replace('.', '_')}", (), "float64") for k in values}
    new_param, new_state = opt.update(p, g, slots, t, opt.hyper_tensors(hyper))
    outputs = {"param": new_param, **{f"state_{k}": v for k, v in new_state.items()}}
    feeds = {"param": param, "grad": grad, "step": np.float64(step),
             **{f"state_{k}": v for k, v in state.items()},
             **{f"hyper_{k.replace('.', '_')}": np.float64(v) for k, v in values.items()}}
    plan = gn.compile(outputs)
    result = plan.run(**{k: v for k, v in feeds.items() if k in plan.plan.feeds})
    param[...] = result["param"]
    for k, v in new_state.items():
        state[k][...] = result[f"state_{k}"]
