from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("device_info_json",)
    DEVICE_INFO_JSON_FIELD_NUMBER: _ClassVar[int]
    device_info_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_info_json: _Optional[_Iterable[str]] = ...) -> None: ...

class OpenSessionRequest(_message.Message):
    __slots__ = ("device", "lease_s", "client")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    device: str
    lease_s: float
    client: str
    def __init__(self, device: _Optional[str] = ..., lease_s: _Optional[float] = ..., client: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("id", "lease_s", "device_info_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INFO_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    lease_s: float
    device_info_json: str
    def __init__(self, id: _Optional[str] = ..., lease_s: _Optional[float] = ..., device_info_json: _Optional[str] = ...) -> None: ...

class SessionRef(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class BlobRef(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class HasBlobResponse(_message.Message):
    __slots__ = ("present",)
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    present: bool
    def __init__(self, present: bool = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("sha256", "kind", "size", "data")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    kind: str
    size: int
    data: bytes
    def __init__(self, sha256: _Optional[str] = ..., kind: _Optional[str] = ..., size: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("session", "sha256")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    session: str
    sha256: str
    def __init__(self, session: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("model_id", "model_info_json")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_INFO_JSON_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_info_json: str
    def __init__(self, model_id: _Optional[str] = ..., model_info_json: _Optional[str] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("session", "model_id")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    session: str
    model_id: str
    def __init__(self, session: _Optional[str] = ..., model_id: _Optional[str] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data", "json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    json: str
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., json: _Optional[str] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("session", "model_id", "request_id", "inputs")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    session: str
    model_id: str
    request_id: int
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, session: _Optional[str] = ..., model_id: _Optional[str] = ..., request_id: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("request_id", "outputs", "status", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    status: str
    error: str
    def __init__(self, request_id: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., status: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("stats_json",)
    STATS_JSON_FIELD_NUMBER: _ClassVar[int]
    stats_json: str
    def __init__(self, stats_json: _Optional[str] = ...) -> None: ...

class SelftestResponse(_message.Message):
    __slots__ = ("passed", "vectors", "mismatches_json", "summary")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MISMATCHES_JSON_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    vectors: int
    mismatches_json: str
    summary: str
    def __init__(self, passed: bool = ..., vectors: _Optional[int] = ..., mismatches_json: _Optional[str] = ..., summary: _Optional[str] = ...) -> None: ...

class UpdateParamsRequest(_message.Message):
    __slots__ = ("session", "model_id", "onnx")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ONNX_FIELD_NUMBER: _ClassVar[int]
    session: str
    model_id: str
    onnx: bytes
    def __init__(self, session: _Optional[str] = ..., model_id: _Optional[str] = ..., onnx: _Optional[bytes] = ...) -> None: ...

class ConvertRequest(_message.Message):
    __slots__ = ("session", "model_id", "value")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    session: str
    model_id: str
    value: Tensor
    def __init__(self, session: _Optional[str] = ..., model_id: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
