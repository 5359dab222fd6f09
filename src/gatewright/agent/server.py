"""The agent: serves this machine's devices over gRPC (service ``gatewright.agent.v1.Agent``, see
``agent.proto``) to ``remote://`` clients.

Every call needs a bearer token from the token file; TLS when a certificate is given. Devices are
opened once and shared by every client; each client works in a session (a lease it renews), and the
models it loads are unloaded when the session is closed or its lease runs out, so a client that
disappears leaves nothing behind. Model blobs are stored by content hash and uploaded once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from gatewright import devices
from gatewright.agent import agent_pb2 as pb
from gatewright.agent import agent_pb2_grpc as pb_grpc
from gatewright.agent import tensors
from gatewright.build import bundle as bundles
from gatewright.devices.base import Device, Model
from gatewright.errors import BundleError, DeviceError, GatewrightError, InferenceError, InputDataError

log = logging.getLogger("gatewright.agent")

DEFAULT_LEASE_S = 30.0
MIN_LEASE_S = 1.0
MAX_MESSAGE_BYTES = 256 << 20
CHUNK_BYTES = 1 << 20
STATUS_KEY = "gatewright-status"  # trailing metadata: the InferenceError status of a failed call

R = TypeVar("R")


@dataclass
class Session:
    id: str
    device: Device
    lease_s: float
    client: str
    expires: float = 0.0
    models: dict[str, Model] = field(default_factory=dict)

    def touch(self) -> None:
        self.expires = time.monotonic() + self.lease_s


class SessionNotFound(GatewrightError):
    pass


class AgentService(pb_grpc.AgentServicer):
    def __init__(self, device_uris: list[str], store: Path, default_lease_s: float = DEFAULT_LEASE_S) -> None:
        if not device_uris:
            raise DeviceError("the agent needs at least one device: --devices sim,emu")
        self.devices: dict[str, Device] = {}
        try:
            for uri in device_uris:
                self.devices[uri] = devices.open(uri)
        except GatewrightError:
            for device in self.devices.values():  # the ones opened before the failing one
                device.close()
            raise
        self.store = store
        (store / "blobs").mkdir(parents=True, exist_ok=True)
        self.default_lease_s = default_lease_s
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._blob_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="agent-reaper", daemon=True)
        self._reaper.start()

    # -- sessions ----------------------------------------------------------------------------------------
    def _session(self, session_id: str) -> Session:
        with self._lock:
            session = self.sessions.get(session_id)
            if session is None:
                raise SessionNotFound(
                    f"session '{session_id}' is unknown or expired (the agent restarted, or the client "
                    "stopped renewing its lease); open a new one"
                )
            session.touch()
            return session

    def _end(self, session: Session, why: str) -> None:
        for model in list(session.models.values()):
            try:
                session.device.unload(model)
            except GatewrightError as exc:
                log.warning("session %s: unloading %s failed: %s", session.id, model.id, exc)
        log.info("session %s (%s) on %s ended: %s", session.id, session.client, session.device.uri, why)

    def _reap(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self._lock:
                expired = [s for s in self.sessions.values() if s.expires < now]
                for session in expired:
                    del self.sessions[session.id]
            for session in expired:
                self._end(session, f"lease of {session.lease_s:g} s ran out")

    def loaded_models(self) -> int:
        return sum(len(device.models) for device in self.devices.values())

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            sessions, self.sessions = list(self.sessions.values()), {}
        for session in sessions:
            self._end(session, "agent shutting down")
        for device in self.devices.values():
            device.close()

    # -- RPCs --------------------------------------------------------------------------------------------
    def ListDevices(self, request: pb.ListDevicesRequest, context: grpc.ServicerContext) -> pb.ListDevicesResponse:
        return _guard(
            context,
            lambda: pb.ListDevicesResponse(
                device_info_json=[json.dumps(d.info().to_json()) for d in self.devices.values()]
            ),
        )

    def OpenSession(self, request: pb.OpenSessionRequest, context: grpc.ServicerContext) -> pb.Session:
        def run() -> pb.Session:
            device = self.devices.get(request.device)
            if device is None:
                raise DeviceError(
                    f"this agent serves no device '{request.device}'; it serves {', '.join(self.devices)}"
                )
            lease = max(MIN_LEASE_S, request.lease_s or self.default_lease_s)
            session = Session(secrets.token_hex(16), device, lease, request.client or context.peer())
            session.touch()
            with self._lock:
                self.sessions[session.id] = session
            log.info("session %s (%s) opened on %s, lease %g s", session.id, session.client, device.uri, lease)
            return pb.Session(id=session.id, lease_s=lease, device_info_json=json.dumps(device.info().to_json()))

        return _guard(context, run)

    def KeepAlive(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.Session:
        def run() -> pb.Session:
            session = self._session(request.session)
            return pb.Session(id=session.id, lease_s=session.lease_s)

        return _guard(context, run)

    def CloseSession(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.Empty:
        def run() -> pb.Empty:
            with self._lock:
                session = self.sessions.pop(request.session, None)
            if session is not None:
                self._end(session, "closed by the client")
            return pb.Empty()

        return _guard(context, run)

    def _blob(self, sha256: str) -> Path | None:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InputDataError(f"'{sha256}' is not a sha256 hex digest")
        for path in (self.store / "blobs" / sha256, self.store / "blobs" / f"{sha256}.onnx"):
            if path.exists():
                return path
        return None

    def _blob_lock(self, sha256: str) -> threading.Lock:
        with self._lock:
            return self._blob_locks.setdefault(sha256, threading.Lock())

    def HasBlob(self, request: pb.BlobRef, context: grpc.ServicerContext) -> pb.HasBlobResponse:
        return _guard(context, lambda: pb.HasBlobResponse(present=self._blob(request.sha256) is not None))

    def Upload(self, request_iterator: Iterator[pb.UploadChunk], context: grpc.ServicerContext) -> pb.BlobRef:
        def run() -> pb.BlobRef:
            first = next(request_iterator, None)
            if first is None:
                raise InputDataError("empty upload: the first chunk must name the blob's sha256, kind and size")
            if first.kind not in ("bundle", "onnx"):
                raise InputDataError(f"upload kind '{first.kind}' is neither 'bundle' nor 'onnx'")
            self._blob(first.sha256)  # checks the digest's form
            digest = hashlib.sha256()
            with tempfile.SpooledTemporaryFile(max_size=64 << 20, dir=str(self.store)) as spool:
                for chunk in _chain(first, request_iterator):
                    digest.update(chunk.data)
                    spool.write(chunk.data)
                    if spool.tell() > first.size:
                        raise InputDataError(f"upload of {first.sha256[:12]} exceeds its announced {first.size} bytes")
                if digest.hexdigest() != first.sha256:
                    raise InputDataError(
                        f"upload does not match its digest (announced {first.sha256[:12]}…, received "
                        f"{digest.hexdigest()[:12]}…, {spool.tell()} bytes); the transfer was damaged, send it again"
                    )
                spool.seek(0)
                data = spool.read()
            # clients that upload the same blob at once: the first stores it, the others find it there
            with self._blob_lock(first.sha256):
                if self._blob(first.sha256) is not None:
                    return pb.BlobRef(sha256=first.sha256)
                if first.kind == "bundle":
                    bundles.unpack(data, self.store / "blobs" / first.sha256)
                else:
                    target = self.store / "blobs" / f"{first.sha256}.onnx"
                    staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
                    staging.write_bytes(data)
                    os.replace(staging, target)
            log.info("stored %s %s (%d bytes)", first.kind, first.sha256[:12], len(data))
            return pb.BlobRef(sha256=first.sha256)

        return _guard(context, run)

    def Load(self, request: pb.LoadRequest, context: grpc.ServicerContext) -> pb.LoadResponse:
        def run() -> pb.LoadResponse:
            session = self._session(request.session)
            path = self._blob(request.sha256)
            if path is None:
                raise DeviceError(f"blob {request.sha256[:12]}… is not stored here; upload it first")
            model = session.device.load(path)
            session.models[model.id] = model
            return pb.LoadResponse(model_id=model.id, model_info_json=json.dumps(model.info().to_json()))

        return _guard(context, run)

    def _model(self, session_id: str, model_id: str) -> Model:
        session = self._session(session_id)
        model = session.models.get(model_id)
        if model is None:
            raise DeviceError(f"no model '{model_id}' in this session; load it first")
        return model

    def Unload(self, request: pb.ModelRef, context: grpc.ServicerContext) -> pb.Empty:
        def run() -> pb.Empty:
            session = self._session(request.session)
            model = self._model(request.session, request.model_id)
            del session.models[model.id]
            session.device.unload(model)
            return pb.Empty()

        return _guard(context, run)

    def Infer(self, request: pb.InferRequest, context: grpc.ServicerContext) -> pb.InferResponse:
        def run() -> pb.InferResponse:
            model = self._model(request.session, request.model_id)
            outputs = model.infer(tensors.decode_all(request.inputs))
            return pb.InferResponse(request_id=request.request_id, outputs=tensors.encode_all(outputs), status="ok")

        return _guard(context, run)

    def InferStream(
        self, request_iterator: Iterator[pb.InferRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.InferResponse]:
        for request in request_iterator:
            try:
                model = self._model(request.session, request.model_id)
                outputs = model.infer(tensors.decode_all(request.inputs))
                yield pb.InferResponse(request_id=request.request_id, outputs=tensors.encode_all(outputs), status="ok")
            except GatewrightError as exc:
                yield pb.InferResponse(request_id=request.request_id, status=_status_name(exc), error=str(exc))

    def Stats(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.StatsResponse:
        def run() -> pb.StatsResponse:
            session = self._session(request.session)
            mine = tuple(f"model.{model_id}." for model_id in session.models)
            xstats = {k: v for k, v in session.device.xstats().items() if k.startswith(("device.", *mine))}
            return pb.StatsResponse(stats_json=json.dumps({"stats": session.device.stats(), "xstats": xstats}))

        return _guard(context, run)

    def ResetStats(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.Empty:
        def run() -> pb.Empty:
            session = self._session(request.session)
            for model in session.models.values():
                model.counters.reset()
            return pb.Empty()

        return _guard(context, run)

    def Selftest(self, request: pb.ModelRef, context: grpc.ServicerContext) -> pb.SelftestResponse:
        def run() -> pb.SelftestResponse:
            result = self._model(request.session, request.model_id).selftest()
            return pb.SelftestResponse(
                passed=result.passed,
                vectors=result.vectors,
                mismatches_json=json.dumps(result.mismatches),
                summary=str(result),
            )

        return _guard(context, run)

    def UpdateParams(self, request: pb.UpdateParamsRequest, context: grpc.ServicerContext) -> pb.Empty:
        def run() -> pb.Empty:
            self._model(request.session, request.model_id).update_params(request.onnx)
            return pb.Empty()

        return _guard(context, run)

    def Quantize(self, request: pb.ConvertRequest, context: grpc.ServicerContext) -> pb.Tensor:
        return self._convert(request, context, to_raw=True)

    def Dequantize(self, request: pb.ConvertRequest, context: grpc.ServicerContext) -> pb.Tensor:
        return self._convert(request, context, to_raw=False)

    def _convert(self, request: pb.ConvertRequest, context: grpc.ServicerContext, to_raw: bool) -> pb.Tensor:
        def run() -> pb.Tensor:
            model = self._model(request.session, request.model_id)
            name, value = request.value.name, tensors.decode(request.value)
            return tensors.encode(name, model.quantize(name, value) if to_raw else model.dequantize(name, value))

        return _guard(context, run)


def _chain(first: pb.UploadChunk, rest: Iterator[pb.UploadChunk]) -> Iterator[pb.UploadChunk]:
    yield first
    yield from rest


def _status_name(exc: GatewrightError) -> str:
    if isinstance(exc, InferenceError):
        return exc.status
    if isinstance(exc, InputDataError | BundleError):
        return "invalid_argument"
    if isinstance(exc, SessionNotFound):
        return "not_found"
    return "failed_precondition"


_CODES = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
}


def _guard(context: grpc.ServicerContext, run: Callable[[], R]) -> R:
    """Run an RPC; a gatewright error becomes a gRPC status with its message (no traceback), an
    inference failure INTERNAL with its own status in the trailing metadata."""
    try:
        return run()
    except GatewrightError as exc:
        status = _status_name(exc)
        if isinstance(exc, InferenceError):
            context.set_trailing_metadata(((STATUS_KEY, status),))
        context.abort(_CODES.get(status, grpc.StatusCode.INTERNAL), str(exc))
    except Exception as exc:
        log.exception("agent: unexpected failure")
        context.abort(grpc.StatusCode.INTERNAL, f"the agent failed unexpectedly ({type(exc).__name__}: {exc})")
    raise AssertionError("unreachable: context.abort raises")


class TokenCheck(grpc.ServerInterceptor):
    """Rejects every call without ``authorization: Bearer <token>`` for one of the agent's tokens."""

    def __init__(self, tokens: list[str]) -> None:
        self._expected = [f"Bearer {token}".encode() for token in tokens]

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        # compare against every token in full: the time taken does not tell how much of one matched
        if any([hmac.compare_digest(given, expected) for expected in self._expected]) or handler is None:
            return handler
        message = "missing bearer token" if not given else "invalid bearer token"

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{message}: give the agent's token (GATEWRIGHT_TOKEN)")

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                deny, handler.request_deserializer, handler.response_serializer
            )
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)


def read_tokens(token_file: Path | None) -> list[str]:
    """Tokens from the file (one per line; blank lines and # comments skipped), else GATEWRIGHT_TOKEN."""
    if token_file is not None:
        try:
            lines = token_file.read_text().splitlines()
        except OSError as exc:
            raise DeviceError(f"{token_file}: cannot read the token file ({exc.strerror})") from None
        tokens = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not tokens:
            raise DeviceError(f"{token_file}: the token file holds no token; put one per line")
        return tokens
    token = os.environ.get("GATEWRIGHT_TOKEN", "").strip()
    if not token:
        raise DeviceError(
            "the agent needs a token that clients must present: --token-file FILE (one token per line) "
            "or the variable GATEWRIGHT_TOKEN; make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe())'`"
        )
    return [token]


def serve(
    listen: str,
    device_uris: list[str],
    tokens: list[str],
    store: Path,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    workers: int = 16,
) -> tuple[grpc.Server, AgentService, int]:
    """Start the agent; returns the server, the service and the bound port (``listen`` may end in :0)."""
    from concurrent.futures import ThreadPoolExecutor

    if (tls_cert is None) != (tls_key is None):
        raise DeviceError("TLS needs both --tls-cert and --tls-key")
    pem: list[tuple[bytes, bytes]] = []
    if tls_cert is not None and tls_key is not None:
        try:
            pem = [(tls_key.read_bytes(), tls_cert.read_bytes())]
        except OSError as exc:
            raise DeviceError(f"{exc.filename}: cannot read the TLS certificate or key ({exc.strerror})") from None
    service = AgentService(device_uris, store, lease_s)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent"),
        interceptors=[TokenCheck(tokens)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_AgentServicer_to_server(service, server)
    try:
        if pem:
            port = server.add_secure_port(listen, grpc.ssl_server_credentials(pem))
        else:
            port = server.add_insecure_port(listen)
    except (OSError, RuntimeError) as exc:
        service.close()
        raise DeviceError(f"cannot listen on {listen} ({exc}); choose another --listen HOST:PORT") from None
    if port == 0:
        service.close()
        raise DeviceError(f"cannot listen on {listen}: the address is taken or invalid; choose another --listen")
    server.start()
    return server, service, port
