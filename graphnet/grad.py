"""``gn.grad``: symbolic gradients as new graph nodes (no run-time tape)."""

from __future__ import annotations

from typing import Sequence

from .passes.autodiff import gradients
from .tensor import Tensor


def grad(y: Tensor, wrt: Tensor | Sequence[Tensor]) -> Tensor | list[Tensor]:
    """d y / d w for each tensor in ``wrt``; ``y`` must be a float scalar.

    Returns tensors shaped like each ``w`` (a single tensor when ``wrt`` is one tensor).
    The results are ordinary graph nodes: compile them, or differentiate them again.

    A ``w`` that ``y`` does not depend on gets zeros (JAX's rule; PyTorch gives None). Such a
    gradient reads no placeholder, so a plan of it alone takes no feeds: feeding it one is a
    FeedError that says the plan does not read it.
    """
    single = isinstance(wrt, Tensor)
    targets = [wrt] if single else list(wrt)
    result = [Tensor(node) for node in gradients(y.node, [t.node for t in targets])]
    return result[0] if single else result
