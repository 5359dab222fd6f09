"""Values on the wire: numpy arrays as raw little-endian bytes, everything else as typed JSON.

Exact both ways: numeric arrays keep dtype, shape and every bit; a sequence of maps (skl2onnx's
ZipMap output) keeps its key type (int64 or str) and float values (a float32 goes through JSON as the
float64 of the same value, and back); string arrays travel as JSON lists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from gatewright.agent import agent_pb2 as pb
from gatewright.errors import InputDataError


def encode(name: str, value: Any) -> pb.Tensor:
    if isinstance(value, list):
        return pb.Tensor(name=name, json=json.dumps(_encode_list(value)))
    array = np.asarray(value)
    if array.dtype.kind in "OUS":
        return pb.Tensor(
            name=name, dtype="str", shape=list(array.shape), json=json.dumps({"str": array.astype(str).tolist()})
        )
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return pb.Tensor(
        name=name, dtype=array.dtype.name, shape=list(array.shape), data=np.ascontiguousarray(little).tobytes()
    )


def decode(tensor: pb.Tensor) -> Any:
    if tensor.json:
        doc = json.loads(tensor.json)
        if "str" in doc:
            return np.array(doc["str"], dtype=object).reshape(tuple(tensor.shape))
        return _decode_list(doc)
    try:
        dtype = np.dtype(tensor.dtype).newbyteorder("<")
        array = np.frombuffer(tensor.data, dtype=dtype).reshape(tuple(tensor.shape))
    except (TypeError, ValueError) as exc:
        raise InputDataError(
            f"tensor '{tensor.name}': {len(tensor.data)} bytes of {tensor.dtype or '?'} do not make shape "
            f"{list(tensor.shape)} ({exc})"
        ) from None
    return array.astype(array.dtype.newbyteorder("="))


def encode_all(values: Mapping[str, Any]) -> list[pb.Tensor]:
    return [encode(name, value) for name, value in values.items()]


def decode_all(tensors: Any) -> dict[str, Any]:
    return {t.name: decode(t) for t in tensors}


def _encode_list(rows: list[Any]) -> dict[str, Any]:
    if not all(isinstance(row, dict) for row in rows):
        raise InputDataError("only sequences of maps travel as lists; send other values as arrays")
    keys = [key for row in rows for key in row]
    key_type = "str" if any(isinstance(k, str) for k in keys) else "int64"
    return {
        "seq_map": [[[k if key_type == "str" else int(k), float(v)] for k, v in row.items()] for row in rows],
        "key_type": key_type,
        "value_type": _value_type(rows),
    }


def _value_type(rows: list[dict[Any, Any]]) -> str:
    for row in rows:
        for value in row.values():
            return np.asarray(value).dtype.name
    return "float32"


def _decode_list(doc: dict[str, Any]) -> list[dict[Any, Any]]:
    to_key = str if doc["key_type"] == "str" else int
    to_value = np.dtype(doc.get("value_type", "float32")).type
    return [{to_key(k): to_value(v) for k, v in row} for row in doc["seq_map"]]
