"""ONNX in and out (the ``onnx`` extra: ``pip install 'graphnet[onnx]'``).

    gn.onnx.export(plan_or_outputs, "model.onnx")     # the declared graph, eval mode, weights inside
    outputs = gn.onnx.load("model.onnx")              # graphnet tensors: compile, train, save, render

``export.py`` maps graphnet's ops to ONNX's (one function per op, ``EXPORTERS``);
``importer.py`` maps ONNX's to graphnet's (``IMPORTERS``); ``files.py`` reads an ONNX file as
the untrusted input it is; ``backend.py`` is ``onnx.backend.base.Backend`` on import and
compile, for ONNX's own node tests. The ``onnx`` package is imported when one of these is
first used.
"""

from __future__ import annotations

from ..errors import OnnxError, OnnxExportError, OnnxFileError, OnnxImportError
from .export import DEFAULT_OPSET, export
from .importer import load, load_model

__all__ = ["DEFAULT_OPSET", "OnnxError", "OnnxExportError", "OnnxFileError", "OnnxImportError", "export", "load",
           "load_model"]
