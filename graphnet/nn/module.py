"""Module: the building block of networks, as in the seed post and in PyTorch.

A Module holds Parameters and sub-Modules as attributes (they register themselves) and
declares its computation in ``forward``; ``model(x)`` calls it on symbolic tensors, which
adds nodes to the graph, tagged with the module's path (``features.3``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

from ..errors import GraphnetError, ShapeError
from ..modes import ModeSwitch
from ..ops import registry
from ..tensor import Parameter, variable


class StateDictError(GraphnetError, KeyError):
    """``load_state_dict`` got missing or unexpected keys."""


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(strict=False)`` did not match."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _refuse_hidden_modules(owner: str, name: str, value: Any) -> None:
    """A list, tuple or dict of Modules or Parameters would hide them from state_dict, .eval()
    and the optimizer: refuse it, naming the container that registers them."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    if any(isinstance(v, (Module, Parameter)) for v in items):
        kind = "ModuleDict" if isinstance(value, dict) else "ModuleList"
        raise GraphnetError(f"{owner}.{name} = a plain {type(value).__name__} of modules or parameters: they would "
                            f"be missing from state_dict, .eval() and the optimizer; use gn.nn.{kind}(...) instead")


#: lists that record ``[module, output]`` for every module call, in the order the calls start,
#: while they are here (gn.summary)
CALL_LOGS: list[list[list[Any]]] = []


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
            _refuse_hidden_modules(type(self).__name__, name, value)
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
        entries = [[self, None] for _ in CALL_LOGS]  # gn.summary: calls in the order they start
        for log, entry in zip(CALL_LOGS, entries):
            log.append(entry)
        with registry.scope(self._path):
            result = self.forward(*args, **kwargs)
        for entry in entries:
            entry[1] = result
        return result

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
        """The direct sub-modules."""
        return iter(self._modules.values())

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        return iter(self._modules.items())

    def apply(self, fn: Any) -> "Module":
        """Call ``fn(module)`` on every sub-module (children first) and on this one; returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def modules(self) -> Iterator["Module"]:
        return (m for _, m in self.named_modules())

    def _named(self, table: str, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for path, module in modules:
            for name, p in getattr(module, table).items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{path}.{name}" if path else name), p

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) for every trainable parameter, e.g. ``0.weight`` (frozen ones too)."""
        return self._named("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, state tensor) for running statistics and other non-trainable state."""
        return self._named("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Parameter]:
        return (b for _, b in self.named_buffers(recurse=recurse))

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Freeze (False) or unfreeze every parameter below; plans compiled afterwards follow."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def to_dtype(self, dtype: str) -> "Module":
        """Every floating parameter and buffer converted to ``dtype``; declare graphs afterwards
        (a graph declared before keeps the old dtype, and compiling it raises GraphError)."""
        for _, tensor in list(self.named_parameters()) + list(self.named_buffers()):
            if tensor.data.dtype.kind == "f" and tensor.data.dtype != np.dtype(dtype):
                tensor.var.data = np.ascontiguousarray(tensor.data.astype(dtype))
                tensor.node = variable(tensor.var).node
        return self

    def double(self) -> "Module":
        """Parameters and buffers in float64 (see ``to_dtype``)."""
        return self.to_dtype("float64")

    def float(self) -> "Module":  # noqa: A003 - PyTorch's name
        """Parameters and buffers in float32 (see ``to_dtype``)."""
        return self.to_dtype("float32")

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

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy values in place; every plan's next run uses them. Returns the missing and
        unexpected keys (with ``strict``, either raises StateDictError). A PyTorch state dict
        converted to NumPy arrays loads as is (``num_batches_tracked`` included)."""
        own = OrderedDict(list(self.named_parameters()) + list(self.named_buffers()))
        # a batch-norm step counter absent from an older state dict (graphnet's before it kept
        # one, or PyTorch's before 0.4.1) keeps its count, as PyTorch treats it
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
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
        return IncompatibleKeys(missing, unexpected)

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


class ModuleList(Module):
    """Modules held in a list and registered as ``0``, ``1``, ... (names in state_dict: ``layers.0.weight``)."""

    def __init__(self, modules: Any = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _check(self, module: Any) -> "Module":
        if not isinstance(module, Module):
            raise GraphnetError(f"ModuleList holds Modules, got {module!r}")
        return module

    def append(self, module: "Module") -> "ModuleList":
        setattr(self, str(len(self)), self._check(module))
        return self

    def extend(self, modules: Any) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: "Module") -> None:
        items = list(self._modules.values())
        items.insert(index, self._check(module))
        self._modules.clear()
        for i, m in enumerate(items):
            self._modules[str(i)] = m

    def __getitem__(self, index: int | slice) -> Any:
        items = list(self._modules.values())
        return ModuleList(items[index]) if isinstance(index, slice) else items[index]

    def __setitem__(self, index: int, module: "Module") -> None:
        key = list(self._modules)[index]
        self._modules[key] = self._check(module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator["Module"]:
        return iter(self._modules.values())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise GraphnetError("ModuleList has no forward: iterate over it in your module's forward")


class ModuleDict(Module):
    """Modules held by string keys and registered under them (``heads.cls.weight``)."""

    def __init__(self, modules: Mapping[str, "Module"] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> "Module":
        return self._modules[key]

    def __setitem__(self, key: str, module: "Module") -> None:
        if not isinstance(key, str) or not isinstance(module, Module):
            raise GraphnetError(f"ModuleDict maps strings to Modules, got {key!r}: {module!r}")
        setattr(self, key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def keys(self) -> Any:
        return self._modules.keys()

    def values(self) -> Any:
        return self._modules.values()

    def items(self) -> Any:
        return self._modules.items()

    def update(self, modules: Mapping[str, "Module"]) -> None:
        for key, module in dict(modules).items():
            self[key] = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise GraphnetError("ModuleDict has no forward: index it in your module's forward")
