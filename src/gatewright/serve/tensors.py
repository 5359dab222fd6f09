"""Tensors on the wire: the protocol's datatypes, JSON data, and raw little-endian bytes.

One owner for the conversions both front ends (REST and gRPC) need: a datatype name to a numpy dtype
and back, a JSON ``data`` list to an array (flat or nested, row-major), raw bytes to an array and back
(BYTES elements are a 4-byte little-endian length followed by the bytes, as the binary tensor
extension defines them). Every mistake raises ``RequestError`` naming the tensor.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from gatewright.serve.errors import RequestError

# The protocol's datatypes and the numpy dtypes that hold them (BYTES: an object array of bytes).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
MAX_DIMS = 32  # numpy's arrays hold at most 64 (32 before numpy 2); no model here has more than a handful
_LITTLE = {name: dtype.newbyteorder("<") for name, dtype in DATATYPES.items() if name != "BYTES"}
# the kinds of numpy array JSON values may form for each datatype: no silent casts from other kinds
_JSON_KINDS = {
    name: "b" if name == "BOOL" else "iuf" if dtype.kind == "f" else "iu" for name, dtype in DATATYPES.items()
}
_BY_DTYPE = {dtype.name: name for name, dtype in DATATYPES.items() if name != "BYTES"}


def datatype_of(dtype: str) -> str:
    """The protocol datatype of a model tensor whose dtype is ``dtype`` (a numpy name or "str")."""
    if dtype in ("str", "object", "bytes"):
        return "BYTES"
    try:
        return _BY_DTYPE[np.dtype(dtype).name]
    except (TypeError, KeyError):
        raise ValueError(f"no protocol datatype for dtype {dtype}") from None


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple):
        raise RequestError(f"tensor '{name}': 'shape' must be a list of integers, not {shape!r}")
    if len(shape) > MAX_DIMS:
        raise RequestError(f"tensor '{name}': shape has {len(shape)} dimensions; at most {MAX_DIMS} are supported")
    for d in shape:  # one plain loop: this runs for every tensor of every request
        if type(d) is not int:  # bool is a subclass of int, and not a dimension
            raise RequestError(f"tensor '{name}': 'shape' must be a list of integers, not {shape!r}")
        if d < 0:
            raise RequestError(f"tensor '{name}': shape {list(shape)} has a negative dimension")
    return tuple(shape)


def check_datatype(name: str, datatype: Any) -> str:
    if not isinstance(datatype, str) or datatype not in DATATYPES:  # a JSON object is not even hashable
        known = ", ".join(DATATYPES)
        raise RequestError(f"tensor '{name}': unknown datatype {datatype!r}; use one of {known}")
    return str(datatype)


def from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """A tensor from its JSON ``data`` (flat or nested row-major)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = _flatten(name, data)
        if len(flat) != count:
            raise RequestError(f"tensor '{name}': {len(flat)} elements given, shape {list(shape)} holds {count}")
        out = np.empty(count, dtype=object)
        for i, item in enumerate(flat):
            if isinstance(item, str):
                out[i] = item.encode()
            elif isinstance(item, bytes):
                out[i] = item
            else:
                raise RequestError(f"tensor '{name}': BYTES elements must be strings, not {type(item).__name__}")
        return out.reshape(shape)
    try:
        raw = np.asarray(data if isinstance(data, list) else [data])  # one conversion; its dtype says what JSON gave
    except (ValueError, TypeError):  # ragged nesting
        raise RequestError(
            f"tensor '{name}': 'data' must be a (nested) list of {datatype} values in row-major order"
        ) from None
    if raw.size != count:
        raise RequestError(f"tensor '{name}': {raw.size} elements given, shape {list(shape)} holds {count}")
    # numpy would cast silently (null to NaN, "1.5" to 1.5, 1.9 to 1 for INT32, true to 1): the values, as
    # JSON typed them, must already be of the datatype's kind
    kinds = _JSON_KINDS[datatype]
    if raw.dtype.kind not in kinds and count:
        what = {"b": "true or false", "iuf": "numbers", "iu": "whole numbers"}[kinds]
        raise RequestError(f"tensor '{name}': {datatype} data must be {what}")
    target = DATATYPES[datatype]
    if kinds == "iu" and count:
        info = np.iinfo(target)
        if raw.min() < info.min or raw.max() > info.max:
            raise RequestError(f"tensor '{name}': a value lies outside {datatype}'s range {info.min}..{info.max}")
    return raw.astype(target, copy=False).reshape(shape)


def _flatten(name: str, data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    stack = [data]
    while stack:  # depth-first, keeping row-major order
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview) -> np.ndarray:
    """A tensor from raw little-endian bytes (BYTES: length-prefixed elements)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        items = split_bytes(name, raw)
        if len(items) != count:
            raise RequestError(f"tensor '{name}': {len(items)} elements given, shape {list(shape)} holds {count}")
        out = np.empty(count, dtype=object)
        out[:] = items
        return out.reshape(shape)
    dtype = _LITTLE[datatype]
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            f"tensor '{name}': {len(raw)} bytes given; shape {list(shape)} of {datatype} takes {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def split_bytes(name: str, raw: bytes | memoryview) -> list[bytes]:
    view = memoryview(raw)
    items: list[bytes] = []
    at = 0
    while at < len(view):
        if at + 4 > len(view):
            raise RequestError(f"tensor '{name}': BYTES data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", view, at)
        at += 4
        if at + length > len(view):
            raise RequestError(f"tensor '{name}': a BYTES element of {length} bytes runs past the end of the data")
        items.append(bytes(view[at : at + length]))
        at += length
    return items


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """Raw little-endian bytes of a tensor (BYTES: length-prefixed elements)."""
    if datatype == "BYTES":
        parts = []
        for item in array.ravel():
            data = _as_bytes(item)
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=_LITTLE[datatype]).tobytes()


def to_json_data(array: np.ndarray, datatype: str) -> Any:
    """The flat row-major ``data`` list of a tensor, in a form orjson writes fast."""
    if datatype == "BYTES":
        return [_as_bytes(item).decode("utf-8", errors="replace") for item in array.ravel()]
    if datatype == "FP16":
        return array.astype(np.float32).ravel()
    return np.ascontiguousarray(array).ravel()


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    return str(item).encode()
