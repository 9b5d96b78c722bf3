"""Reading and writing the IDX format (the format of MNIST and Fashion-MNIST).

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number of
dimensions), one big-endian unsigned 32-bit size per dimension, then the values in
row-major order, big-endian. Files may be gzip-compressed; that is recognised by their
first two bytes (1f 8b), never by their name. Nothing is ever unpickled.
"""

from __future__ import annotations

import gzip as _gzip
import os
import zlib
from typing import BinaryIO

import numpy as np

from .errors import DatasetError

#: IDX dtype code -> NumPy dtype as stored in the file (big-endian).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES: dict[tuple[str, int], int] = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot compress better than about 1032:1; a gzip file claiming a payload larger
# than this many times its own size is lying, and is rejected before anything is allocated.
_MAX_DEFLATE_RATIO = 1100
_CHUNK = 1 << 20


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    parts = []
    while n > 0:
        part = stream.read(n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _readinto_full(stream: BinaryIO, buf: memoryview) -> int:
    """Fill ``buf`` from ``stream`` as far as it goes; return the number of bytes read."""
    got = 0
    total = len(buf)
    while got < total:
        n = stream.readinto(buf[got:min(total, got + _CHUNK)])
        if not n:
            break
        got += n
    return got


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a NumPy array in native byte order.

    Raises ``DatasetError`` naming the file and what is wrong: missing or unreadable file,
    bad magic, unknown dtype code, truncated header, a payload shorter or longer than the
    header's dimensions say, a header claiming more data than the file can hold, or a
    corrupt gzip stream.
    """
    path = os.fspath(path)
    try:
        raw = open(path, "rb")
    except FileNotFoundError as e:
        raise DatasetError(f"IDX file {path!r} does not exist") from e
    except OSError as e:
        raise DatasetError(f"cannot open IDX file {path!r}: {e}") from e
    with raw:
        try:
            file_size = os.fstat(raw.fileno()).st_size
            compressed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
        except OSError as e:
            raise DatasetError(f"cannot read IDX file {path!r}: {e}") from e
        stream: BinaryIO = _gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            return _read_stream(stream, path, file_size, compressed)
        except (_gzip.BadGzipFile, zlib.error, EOFError) as e:
            raise DatasetError(f"IDX file {path!r}: gzip data is corrupt ({e or type(e).__name__})") from e
        except DatasetError:
            raise
        except OSError as e:
            what = "gzip data is corrupt" if compressed else "read failed"
            raise DatasetError(f"IDX file {path!r}: {what} ({e})") from e
        finally:
            if compressed:
                stream.close()


def _read_stream(stream: BinaryIO, path: str, file_size: int, compressed: bool) -> np.ndarray:
    magic = _read_exact(stream, 4)
    if len(magic) < 4:
        raise DatasetError(f"IDX file {path!r}: truncated header (got {len(magic)} of 4 magic-number bytes)")
    if magic[0] != 0 or magic[1] != 0:
        raise DatasetError(f"IDX file {path!r}: bad magic number {magic.hex()} (must start with two zero bytes)")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DatasetError(f"IDX file {path!r}: unknown dtype code 0x{code:02X} (known: {known})")
    dtype = IDX_DTYPES[code]
    dims_raw = _read_exact(stream, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DatasetError(f"IDX file {path!r}: truncated header ({ndim} dimensions need {4 * ndim} bytes "
                           f"of sizes, got {len(dims_raw)})")
    shape = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    header = 4 + 4 * ndim
    limit = (file_size * _MAX_DEFLATE_RATIO) if compressed else (file_size - header)
    if nbytes > limit:
        how = (f"more than a {file_size}-byte gzip file can hold" if compressed
               else f"but only {file_size - header} bytes follow the header")
        raise DatasetError(f"IDX file {path!r}: size mismatch: header claims shape {shape} of {dtype.name} "
                           f"({nbytes} bytes), {how}")
    buf = bytearray(nbytes)
    got = _readinto_full(stream, memoryview(buf))
    if got < nbytes:
        raise DatasetError(f"IDX file {path!r}: size mismatch: truncated payload, shape {shape} of {dtype.name} "
                           f"needs {nbytes} bytes, only {got} present")
    extra = stream.read(1)
    if extra:
        rest = 1 + len(stream.read()) if not compressed else None
        amount = f"{rest} trailing bytes" if rest is not None else "trailing bytes"
        raise DatasetError(f"IDX file {path!r}: size mismatch: {amount} after the {nbytes}-byte payload "
                           f"of shape {shape}")
    array = np.frombuffer(buf, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False) if dtype.byteorder == ">" else array


def _encode(array: np.ndarray, path: str = "<bytes>") -> tuple[bytes, bytes]:
    array = np.asarray(array)
    code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise DatasetError(f"cannot write {array.dtype} to IDX file {path!r}: IDX holds only "
                           "uint8, int8, int16, int32, float32 and float64")
    if array.ndim > 255 or any(d >= 2 ** 32 for d in array.shape):
        raise DatasetError(f"cannot write shape {array.shape} to IDX file {path!r}: "
                           "at most 255 dimensions of size < 2**32")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header, np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def idx_bytes(array: np.ndarray) -> bytes:
    """The plain (uncompressed) IDX encoding of ``array``; handy for tests and tools."""
    header, payload = _encode(array)
    return header + payload


def write_idx(path: str | os.PathLike, array: np.ndarray, gzip: bool = False) -> None:
    """Write ``array`` to ``path`` as an IDX file, gzip-compressed when ``gzip`` is true.

    Supported dtypes: uint8, int8, int16, int32, float32, float64 (others raise
    ``DatasetError``). Compressed output is deterministic (no timestamp in the gzip header).
    """
    header, payload = _encode(array, os.fspath(path))
    with open(path, "wb") as f:
        if gzip:
            with _gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as gz:
                gz.write(header)
                gz.write(payload)
        else:
            f.write(header)
            f.write(payload)
