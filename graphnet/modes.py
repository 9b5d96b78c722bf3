"""Train and eval mode, decided when a plan is compiled rather than when a graph is declared.

A module's mode-dependent ops (Dropout, BatchNorm) carry a ``ModeSwitch`` attribute that
points back at the module. ``gn.compile(..., mode=None | "train" | "eval")`` resolves each
switch: to the module's mode at compile time (``model.train()`` / ``model.eval()``), or to
the mode asked for. So one graph, declared once, compiles to a training plan and, after
``model.eval()``, to an inference plan, and both are right.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .errors import GraphnetError

MODES = (None, "train", "eval")


class ModeSwitch:
    """A module's train/eval mode as a node attribute: hashed and compared by identity.

    ``training`` reads the module's current mode (the switch keeps its module alive, as the
    graph keeps its parameters); a switch loaded from a plan file keeps the value it was
    saved with.
    """

    __slots__ = ("_module", "_path", "_kind", "_value")

    def __init__(self, module: Any = None, *, path: str = "", kind: str = "", value: bool = True) -> None:
        self._module = module
        self._path, self._kind, self._value = path, kind, bool(value)

    @property
    def training(self) -> bool:
        module = self._module
        return bool(module.training) if module is not None else self._value

    @property
    def path(self) -> str:
        module = self._module
        return (module._path or "model") if module is not None else self._path

    @property
    def kind(self) -> str:
        module = self._module
        return type(module).__name__ if module is not None else self._kind

    def describe(self) -> str:
        return f"{self.path} ({self.kind})" if self.kind else self.path

    def __repr__(self) -> str:
        return f"mode({self.describe()}: {'train' if self.training else 'eval'})"


def check_mode(mode: Any) -> None:
    if mode not in MODES:
        raise GraphnetError(f"mode must be None (each module's own), 'train' or 'eval', got {mode!r}")


def resolve(value: Any, mode: Any) -> bool:
    """A mode attribute as a bool: explicit bools stay; switches follow ``mode`` ("train",
    "eval", or a mapping switch -> bool) or their module."""
    if not isinstance(value, ModeSwitch):
        return bool(value)
    if isinstance(mode, Mapping):
        return bool(mode[value]) if value in mode else value.training
    if mode is None:
        return value.training
    return mode == "train"


def plan_mode(switches: Sequence[ModeSwitch], mode: str | None) -> str | None:
    """"train", "eval" or "mixed": how the modules' switches resolve; None without any."""
    values = {resolve(s, mode) for s in switches}
    if not values:
        return None
    return "mixed" if len(values) > 1 else "train" if values.pop() else "eval"
