"""``onnx.backend.base.Backend`` on graphnet: a model is imported (graphnet.onnx.importer) and
compiled into an inference plan, so ``onnx.backend.test.BackendTest(GraphnetBackend)`` runs
ONNX's own node tests against graphnet.

    import onnx.backend.test
    tests = onnx.backend.test.BackendTest(GraphnetBackend, __name__)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .export import DEFAULT_OPSET, onnx_module
from .files import initializers
from ..errors import OnnxImportError
from .importer import load_model

onnx_module()
import onnx.backend.base as _base  # noqa: E402  (after the check above, which says how to install onnx)


class GraphnetRep(_base.BackendRep):
    """An imported, compiled model: ``run(inputs)`` gives the outputs in the graph's order.

    A model that feeds a shape-like value (Reshape's shape, reduction axes) as a graph input
    rather than holding it as a constant compiles at its first run instead, with its integer
    inputs taken as the constants they are then (one plan per distinct set of them): a
    static graph needs them when it is built, as XLA does."""

    def __init__(self, model: Any, executor: str = "numpy") -> None:
        self.model, self.executor = model, executor
        self.arrays = initializers(model, None)
        names = {t.name for t in model.graph.initializer}
        self.input_names = [v.name for v in model.graph.input if v.name not in names]
        self.plans: dict[Any, tuple[Any, list[str]]] = {}
        try:
            self.plans[None] = self._compile(None)
        except OnnxImportError as exc:
            if "must be a constant" not in str(exc):
                raise

    def _compile(self, constants: dict[str, np.ndarray] | None) -> tuple[Any, list[str]]:
        from ..compile import compile as compile_plan

        outputs = load_model(self.model, self.arrays, trainable=False, constants=constants)
        return compile_plan(outputs, executor=self.executor, mode="eval"), list(outputs)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            values = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
            feeds = {k: np.asarray(v) for k, v in zip(self.input_names, values)}
        if None in self.plans:
            plan, names = self.plans[None]
        else:
            constants = {k: v for k, v in feeds.items() if v.dtype.kind in "iu"}
            key = tuple((k, v.dtype.str, v.shape, v.tobytes()) for k, v in sorted(constants.items()))
            if key not in self.plans:
                self.plans[key] = self._compile(constants)
            plan, names = self.plans[key]
        out = plan.run({k: v for k, v in feeds.items() if k in plan.plan.feeds})
        return tuple(np.asarray(out[name]) for name in names)


class GraphnetBackend(_base.Backend):
    """ONNX models run by graphnet (the NumPy executor)."""

    @classmethod
    def is_compatible(cls, model: Any, device: str = "CPU", **kwargs: Any) -> bool:
        return device == "CPU"

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> GraphnetRep:
        super().prepare(model, device, **kwargs)
        return GraphnetRep(model)

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: Any, inputs: Any, device: str = "CPU", outputs_info: Sequence[Any] | None = None,
                 **kwargs: Any) -> tuple[np.ndarray, ...]:
        """One node as a model of its own: its inputs typed by the arrays given."""
        onnx = onnx_module()
        helper = onnx.helper
        arrays = [np.asarray(a) for a in (inputs.values() if isinstance(inputs, dict) else inputs)]
        names = [name for name in node.input if name]
        graph_inputs = [helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                        for name, a in zip(names, arrays)]
        graph_outputs = [helper.make_empty_tensor_value_info(name) for name in node.output if name]
        model = helper.make_model(helper.make_graph([node], "node", graph_inputs, graph_outputs),
                                  opset_imports=[helper.make_opsetid("", kwargs.get("opset_version", DEFAULT_OPSET))])
        # straight to the representation: ONNX's checker wants output types a lone node does not state
        return GraphnetRep(model).run(dict(zip(names, arrays)))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


prepare = GraphnetBackend.prepare
run_model = GraphnetBackend.run_model
supports_device = GraphnetBackend.supports_device
