"""Reading an ONNX file as untrusted input.

The protobuf is parsed without following external data; each initializer is then checked
before any array is made from it: its element type and dims (no negative dims, at most
``MAX_ELEMENTS`` elements, ``MAX_TOTAL_BYTES`` in all), inline data of exactly the declared
size, and external data only from a plain relative path that stays inside the model's
folder (no absolute path, no ``..``, no link leading out: the path-traversal holes of
ONNX's own loader), within the file's size. Anything else is an OnnxFileError. Nothing
from the file is executed.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..errors import OnnxFileError
from .export import onnx_module

MAX_FILE_BYTES = 2 ** 31          # protobuf's own limit for one message
MAX_ELEMENTS = 2 ** 31            # per tensor
MAX_TOTAL_BYTES = 16 * 2 ** 30    # all initializers together
MAX_NODES = 1_000_000
MAX_RANK = 32

#: ONNX element type -> NumPy dtype, for the types graphnet reads
ELEMENT_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
                 11: "float64"}


def read_model(path: str | os.PathLike[str]) -> tuple[Any, dict[str, np.ndarray]]:
    """The checked ModelProto at ``path`` and its initializers as NumPy arrays (external data read
    from inside the model's folder only)."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise OnnxFileError(f"cannot read {path!r}: {exc}") from None
    if size > MAX_FILE_BYTES:
        raise OnnxFileError(f"{path!r} is {size:,} bytes, more than an ONNX protobuf may hold")
    with open(path, "rb") as handle:
        data = handle.read()
    model = parse(data, what=repr(path))
    return model, initializers(model, os.path.dirname(os.path.abspath(path)))


def parse(data: bytes, what: str = "the model") -> Any:
    """A ModelProto from bytes, or OnnxFileError for a malformed one."""
    onnx = onnx_module()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError, RuntimeWarning-turned errors, ...
        raise OnnxFileError(f"{what} is not a valid ONNX protobuf: {type(exc).__name__}: {exc}") from None
    if not model.HasField("graph"):
        raise OnnxFileError(f"{what} holds no graph")
    if len(model.graph.node) > MAX_NODES:
        raise OnnxFileError(f"{what} has {len(model.graph.node):,} nodes")
    return model


def _element_count(dims: Any, what: str) -> int:
    dims = list(dims)
    if len(dims) > MAX_RANK or any(d < 0 for d in dims):
        raise OnnxFileError(f"{what}: bad dims {dims[:8]}")
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise OnnxFileError(f"{what}: {count:,} elements is more than graphnet reads ({MAX_ELEMENTS:,})")
    return count


def _inside(folder: str, location: str, what: str) -> str:
    """``location`` resolved inside ``folder``, or OnnxFileError."""
    if not location or os.path.isabs(location) or "\\" in location or any(
            part in ("..", "") for part in location.split("/")) or "\x00" in location:
        raise OnnxFileError(f"{what}: external data location {location[:200]!r} is not a plain path inside "
                            f"the model's folder")
    full = os.path.realpath(os.path.join(folder, location))
    root = os.path.realpath(folder)
    if os.path.commonpath([full, root]) != root:
        raise OnnxFileError(f"{what}: external data {location[:200]!r} leads outside the model's folder")
    return full


def tensor_array(tensor: Any, folder: str | None, what: str, budget: list[int] | None = None) -> np.ndarray:
    """A checked TensorProto as a NumPy array."""
    onnx = onnx_module()
    if tensor.data_type not in ELEMENT_TYPES:
        raise OnnxFileError(f"{what}: element type {tensor.data_type} is not one graphnet reads")
    dtype = np.dtype(ELEMENT_TYPES[tensor.data_type])
    count = _element_count(tensor.dims, what)
    nbytes = count * dtype.itemsize
    if budget is not None:
        budget[0] += nbytes
        if budget[0] > MAX_TOTAL_BYTES:
            raise OnnxFileError(f"{what}: the initializers add up to more than {MAX_TOTAL_BYTES:,} bytes")
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        if folder is None:
            raise OnnxFileError(f"{what}: external data, but the model was given as bytes")
        entries = {e.key: e.value for e in tensor.external_data}
        unknown = set(entries) - {"location", "offset", "length", "checksum"}
        if unknown:
            raise OnnxFileError(f"{what}: unknown external data fields {sorted(unknown)}")
        full = _inside(folder, entries.get("location", ""), what)
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries.get("length", str(nbytes)))
        except ValueError:
            raise OnnxFileError(f"{what}: external data offset or length is not a number") from None
        if offset < 0 or length != nbytes:
            raise OnnxFileError(f"{what}: external data of {length} bytes at {offset}, expected {nbytes} bytes")
        try:
            with open(full, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                if offset + length > handle.tell():
                    raise OnnxFileError(f"{what}: external data runs past the end of its file")
                handle.seek(offset)
                raw = handle.read(length)
        except OSError as exc:
            raise OnnxFileError(f"{what}: cannot read external data: {exc}") from None
        return np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype).reshape(tuple(tensor.dims))
    if tensor.HasField("raw_data"):
        if len(tensor.raw_data) != nbytes:
            raise OnnxFileError(f"{what}: {len(tensor.raw_data)} bytes of data for {count} {dtype} elements")
        return np.frombuffer(tensor.raw_data, dtype.newbyteorder("<")).astype(dtype).reshape(tuple(tensor.dims))
    try:
        array = onnx.numpy_helper.to_array(tensor)
    except Exception as exc:
        raise OnnxFileError(f"{what}: unreadable tensor data ({type(exc).__name__}: {exc})") from None
    if array.size != count:
        raise OnnxFileError(f"{what}: {array.size} values for dims {list(tensor.dims)}")
    return np.asarray(array, dtype)


def initializers(model: Any, folder: str | None) -> dict[str, np.ndarray]:
    """Every initializer of ``model``'s graph, checked."""
    budget = [0]
    found = {}
    for tensor in model.graph.initializer:
        found[tensor.name] = tensor_array(tensor, folder, f"initializer {tensor.name[:80]!r}", budget)
    return found
