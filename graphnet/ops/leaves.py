"""Leaf ops: values that enter a graph rather than being computed in it."""

from __future__ import annotations

from ..ir import TensorType
from .registry import defop

# Kernels are None: the executor binds these buffers (feeds, constants, variables) itself.
defop("placeholder", attrs={"name": "str", "shape": "dims", "dtype": "dtype"}, category="leaf", infer=lambda *, name, shape, dtype: TensorType(shape, dtype), kernel=None,
      doc="An input fed at run time.")
defop("constant", attrs={"value": "any"}, category="leaf", infer=lambda *, value: TensorType(tuple(value.array.shape), value.array.dtype.name), kernel=None,
      doc="A value baked into the graph.")
defop("variable", attrs={"var": "any", "shape": "dims", "dtype": "dtype"}, category="leaf", infer=lambda *, var, shape, dtype: TensorType(shape, dtype), kernel=None,
      doc="A parameter or a piece of state, read from and updated in place in its Variable.")
