"""Typed errors. Every error graphnet raises on purpose is a ``GraphnetError``."""

from __future__ import annotations


class GraphnetError(Exception):
    """Base class of every error graphnet raises deliberately."""


class ShapeError(GraphnetError, ValueError):
    """An op was declared with inputs whose shapes or dtypes it cannot accept."""


class DTypeError(ShapeError, TypeError):
    """An op was declared with an input dtype it cannot accept."""


class FeedError(GraphnetError, ValueError):
    """A value fed to ``run`` is missing, unexpected, or of the wrong shape or dtype."""


class GraphError(GraphnetError, ValueError):
    """A graph is malformed: a cycle, an input that is not in the graph, an unknown op."""


class GradientError(GraphnetError, ValueError):
    """A gradient was requested that cannot be formed (non-scalar output, integer path)."""


class ExecutorError(GraphnetError, ValueError):
    """An unknown or unavailable executor was requested."""


class MemoryLimitError(ExecutorError, MemoryError):
    """A run would need more memory than the limit; refused before anything ran."""


class OptimizerError(GraphnetError, ValueError):
    """An unknown optimizer, or an optimizer used with bad settings."""


class NumericsError(GraphnetError, FloatingPointError):
    """A NaN or Inf appeared while ``check_numerics`` was on."""


class LossNotFiniteError(NumericsError):
    """A training step's loss is NaN or Inf: its update was not applied. ``loss`` holds it."""

    def __init__(self, message: str, loss: float) -> None:
        super().__init__(message)
        self.loss = loss


class PlanFileError(GraphnetError, ValueError):
    """A plan file cannot be saved or loaded: unreadable, malformed, or inconsistent."""


class PlanVersionError(PlanFileError):
    """A plan file was written in a format version this graphnet cannot read."""


class ConfigError(GraphnetError, ValueError):
    """A setting graphnet does not know (``gn.config.options``)."""


class SymbolicTensorError(GraphnetError, TypeError):
    """A concrete value (``.item()``, ``.numpy()``, ``.backward()``) was asked of a symbolic tensor."""


class FeedCastWarning(UserWarning):
    """A feed's values were rounded to the placeholder's narrower float dtype (float64 data to float32)."""


class ModeWarning(UserWarning):
    """A plan was compiled in a mode the user probably did not mean (an inference plan with
    modules still in training mode)."""


class DistributedError(GraphnetError, RuntimeError):
    """Data-parallel processes disagree (different plans on different ranks) or a collective
    could not complete."""


class DistributedTimeoutError(DistributedError, TimeoutError):
    """A collective waited longer than ``GRAPHNET_DIST_TIMEOUT`` seconds: another process died,
    hung, or stopped calling the plan."""


class OnnxError(GraphnetError, ValueError):
    """Exporting to or importing from ONNX failed."""


class OnnxExportError(OnnxError):
    """A graph holds an op (or attribute) ONNX has no counterpart for; the message names it and
    where it was declared."""


class OnnxImportError(OnnxError):
    """An ONNX model uses ops or attributes graphnet does not have; the message lists them all."""


class OnnxFileError(OnnxError):
    """An ONNX file is malformed or hostile (external data outside its folder, absurd sizes)."""
