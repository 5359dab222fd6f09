"""Errors of the inference server, each with the HTTP status and gRPC code it is answered with."""

from __future__ import annotations

from gatewright.errors import GatewrightError


class ServeError(GatewrightError):
    """A request the server cannot answer; ``http_status`` and ``grpc_code`` say how it is reported."""

    http_status: int = 400
    grpc_code: str = "INVALID_ARGUMENT"


class RequestError(ServeError):
    """The request is malformed or does not fit the model (JSON, shapes, datatypes, parameters)."""


class NotFoundError(ServeError):
    """No such model, version, path or shared-memory region."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class UnavailableError(ServeError):
    """The model exists but is not ready (loading, unloaded or failed)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class TooLargeError(ServeError):
    """The request is larger than the server accepts (``--max-request-bytes``)."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UnsupportedError(ServeError):
    """A valid protocol feature this server does not offer (CUDA shared memory: there is no GPU)."""

    http_status = 400
    grpc_code = "UNIMPLEMENTED"


class ModelFailedError(ServeError):
    """The device failed the inference; the server and the model's other requests go on. Reported
    as the device layer's status says: internal (500), unavailable (503), deadline_exceeded (504)."""

    def __init__(self, message: str, status: str = "internal") -> None:
        super().__init__(message)
        self.http_status, self.grpc_code = _FAILURES.get(status, _FAILURES["internal"])


_FAILURES = {
    "internal": (500, "INTERNAL"),
    "unavailable": (503, "UNAVAILABLE"),
    "deadline_exceeded": (504, "DEADLINE_EXCEEDED"),
}
