"""Module: the building block of networks, as in the seed post and in PyTorch.

A Module holds Parameters and sub-Modules as attributes (they register themselves) and
declares its computation in ``forward``; ``model(x)`` calls it on symbolic tensors, which
adds nodes to the graph, tagged with the module's path (``features.3``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import GraphnetError, ShapeError
from ..modes import ModeSwitch
from ..ops import registry
from ..tensor import Parameter


class StateDictError(GraphnetError, KeyError):
    """``load_state_dict`` got missing or unexpected keys."""


class Module:
    """Base class of layers and models. Subclasses define ``forward``."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_path", "")

    def __setattr__(self, name: str, value: Any) -> None:
        if "_modules" not in self.__dict__:
            raise GraphnetError(f"{type(self).__name__}.__init__ must call super().__init__() before assigning {name}")
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, (Parameter, Module)):
            self.__dict__.pop(name, None)  # a plain attribute of that name would shadow the registered one
        if isinstance(value, Parameter):
            (self._parameters if value.trainable else self._buffers)[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def register_buffer(self, name: str, value: Any) -> Parameter:
        """Non-trainable state saved with the model (running statistics)."""
        tensor = value if isinstance(value, Parameter) else Parameter(np.asarray(value), trainable=False)
        if tensor.trainable:
            raise GraphnetError(f"buffer {name!r} must not be trainable")
        setattr(self, name, tensor)
        return tensor

    # --- calling ---------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise GraphnetError(f"{type(self).__name__} must define forward() (Module.forward is abstract)")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not registry._scope_stack:  # the outermost call names every module and parameter below it
            self._assign_names()
        with registry.scope(self._path):
            return self.forward(*args, **kwargs)

    def _assign_names(self) -> None:
        for path, module in self.named_modules():
            object.__setattr__(module, "_path", path)
        for name, tensor in list(self.named_parameters()) + list(self.named_buffers()):
            if tensor.var.name is None:
                tensor.var.name = name

    # --- structure -------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """(dotted path, module) for this module and every one below it."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            path, module = stack.pop(0)
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield path, module
            children = [(f"{path}.{n}" if path else n, m) for n, m in module._modules.items()]
            stack[0:0] = children

    def children(self) -> Iterator["Module"]:
        return iter(self._modules.values())

    def modules(self) -> Iterator["Module"]:
        return (m for _, m in self.named_modules())

    def _named(self, table: str) -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        for path, module in self.named_modules():
            for name, p in getattr(module, table).items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{path}.{name}" if path else name), p

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) for every trainable parameter, e.g. ``0.weight``."""
        return self._named("_parameters")

    def parameters(self) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters())

    def named_buffers(self) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, state tensor) for running statistics and other non-trainable state."""
        return self._named("_buffers")

    @property
    def mode_switch(self) -> ModeSwitch:
        """This module's train/eval mode as mode-dependent ops record it; gn.compile reads it."""
        switch = self.__dict__.get("_mode_switch")
        if switch is None:
            switch = ModeSwitch(self)
            object.__setattr__(self, "_mode_switch", switch)
        return switch

    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout on, batch statistics) for plans compiled from now on, including
        plans compiled from graphs declared before: the mode is read when a plan is compiled."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode for plans compiled from now on (see ``train``)."""
        return self.train(False)

    # --- values ----------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter and buffer value, after the latest training step."""
        return OrderedDict((n, np.array(p.data, copy=True))
                           for n, p in list(self.named_parameters()) + list(self.named_buffers()))

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy values in place; every plan's next run uses them."""
        own = OrderedDict(list(self.named_parameters()) + list(self.named_buffers()))
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise StateDictError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, value in state.items():
            if name not in own:
                continue
            target = own[name].data
            array = np.asarray(value)
            if array.shape != target.shape:
                raise ShapeError(f"load_state_dict: {name} has shape {target.shape}, got {array.shape}")
            np.copyto(target, array.astype(target.dtype, copy=False))

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied one after another; index it like a list (``model[0]``)."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise GraphnetError(f"Sequential item {i} is not a Module: {m!r}")
            setattr(self, str(i), m)

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, index: int | slice) -> Any:
        items = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> "Sequential":
        setattr(self, str(len(self)), module)
        return self
