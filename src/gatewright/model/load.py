"""Read an ONNX model from a path or bytes, check it, and infer its shapes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from gatewright.errors import ModelLoadError
from gatewright.model.ir import TensorSpec

_HOW_TO_FIX = "export the model again (e.g. torch.onnx.export, skl2onnx.to_onnx, tf2onnx) and check the path"


@dataclass(frozen=True)
class LoadedModel:
    """A checked ONNX model, with shapes inferred, and the exact bytes it came from."""

    proto: onnx.ModelProto
    inferred: onnx.ModelProto
    source: bytes
    sha256: str
    label: str  # where it came from, for messages

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Graph inputs that are not initializers, as declared."""
        constants = {init.name for init in self.proto.graph.initializer}
        return tuple(tensor_spec(i.name, i.type) for i in self.proto.graph.input if i.name not in constants)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(tensor_spec(o.name, o.type) for o in self.proto.graph.output)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size when the first input fixes it (e.g. a PyTorch export with batch 1)."""
        shape = self.inputs[0].shape if self.inputs else None
        return shape[0] if shape and isinstance(shape[0], int) else None

    @property
    def name(self) -> str:
        if self.label.endswith(".onnx"):
            return Path(self.label).stem
        return self.proto.graph.name or "model"


def load_model(source: str | Path | bytes, label: str | None = None) -> LoadedModel:
    """Load and check an ONNX model. Any problem is a one-line ``ModelLoadError``."""
    if isinstance(source, bytes):
        data, label = source, label or "<bytes>"
        base_dir = None
    else:
        path = Path(source)
        label = label or str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelLoadError(f"{label}: no such file; give the path of an .onnx model") from None
        except IsADirectoryError:
            raise ModelLoadError(f"{label}: is a directory, not an ONNX model file") from None
        except OSError as exc:
            raise ModelLoadError(f"{label}: cannot read the file ({exc.strerror})") from None
        base_dir = path.parent
    if not data:
        raise ModelLoadError(f"{label}: the file is empty, not an ONNX model; {_HOW_TO_FIX}")

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"{label}: not an ONNX model or truncated ({_first_line(exc) or 'protobuf parse failed'}); {_HOW_TO_FIX}"
        ) from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise ModelLoadError(f"{label}: not an ONNX model or truncated (it holds no graph nodes); {_HOW_TO_FIX}")

    if base_dir is not None and _uses_external_data(proto):
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(base_dir))
        except OSError as exc:
            raise ModelLoadError(f"{label}: cannot read its external tensor data ({exc})") from None
        data = proto.SerializeToString()

    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"{label}: the ONNX checker rejects the model: {_first_line(exc)}") from None
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise ModelLoadError(f"{label}: shape inference fails: {_first_line(exc)}") from None
    return LoadedModel(proto, inferred, data, hashlib.sha256(data).hexdigest(), label)


def _uses_external_data(proto: onnx.ModelProto) -> bool:
    return any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def tensor_spec(name: str, type_proto: onnx.TypeProto | None) -> TensorSpec:
    """The declared type of a value: numpy dtype and dims for tensors, ONNX type text otherwise."""
    if type_proto is None or type_proto.WhichOneof("value") != "tensor_type":
        text = _type_text(type_proto) if type_proto is not None else "unknown"
        return TensorSpec(name, text, None)
    tensor = type_proto.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    dtype_name = "str" if dtype.kind in "OUS" else dtype.name
    if not tensor.HasField("shape"):
        return TensorSpec(name, dtype_name, ())
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None)
        for d in tensor.shape.dim
    )
    return TensorSpec(name, dtype_name, dims)


def _type_text(type_proto: onnx.TypeProto) -> str:
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type).name})"
    if kind == "sequence_type":
        return f"seq({_type_text(type_proto.sequence_type.elem_type)})"
    if kind == "map_type":
        key = helper.tensor_dtype_to_np_dtype(type_proto.map_type.key_type)
        key_name = "str" if np.dtype(key).kind in "OUS" else np.dtype(key).name
        return f"map({key_name},{_type_text(type_proto.map_type.value_type)})"
    return kind or "unknown"
