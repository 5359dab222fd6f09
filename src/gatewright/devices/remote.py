"""``remote://HOST:PORT/DEVICE``: a device behind a ``gatewright agent``, with the local device API.

The client opens a session on the agent's device and renews its lease in the background. Models are
uploaded by content hash (once per agent, in chunks) and loaded in the session. If the agent
restarts, the next call finds the session gone, opens a new one, loads the models again and retries
once; a call in flight when the agent went away fails with a clear ``unavailable`` error.

The token comes from ``open(uri, token=...)`` or the variable ``GATEWRIGHT_TOKEN``; TLS is used when
``tls_ca=`` (a PEM file, or the variable ``GATEWRIGHT_TLS_CA``) or ``tls=True`` (system roots) is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import numpy as np

from gatewright.agent import agent_pb2 as pb
from gatewright.agent import agent_pb2_grpc as pb_grpc
from gatewright.agent import tensors
from gatewright.agent.server import CHUNK_BYTES, MAX_MESSAGE_BYTES, STATUS_KEY
from gatewright.build import bundle as bundles
from gatewright.build.bundle import Bundle
from gatewright.devices.base import Device, DeviceInfo, Model, ModelInfo, Op, SelftestResult
from gatewright.errors import DeviceError, GatewrightError, InferenceError, InputDataError
from gatewright.model.ir import TensorSpec
from gatewright.quant.fixed import FixedFormat

log = logging.getLogger("gatewright")
R = TypeVar("R")
DEFAULT_TIMEOUT_S = 600.0


def parse_uri(uri: str) -> tuple[str, str]:
    """``remote://host:port/device`` -> (``host:port``, ``device``); the device is the agent's URI for
    it, taken as written (``board:ulx3s?port=/dev/ttyUSB0`` included)."""
    address, _, device = uri.removeprefix("remote://").partition("/")
    parts = urlsplit(f"remote://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not uri.startswith("remote://") or not parts.hostname or not port or not device:
        raise DeviceError(
            f"'{uri}' is not a remote device URI; write remote://HOST:PORT/DEVICE, e.g. remote://gpu1:9000/sim"
        )
    return address, device


class RemoteModel(Model):
    concurrent = True  # a gRPC channel carries many calls at once; the agent orders them per model

    def __init__(self, device: RemoteDevice, info: ModelInfo, sha256: str, kind: str, source: Path) -> None:
        super().__init__(
            info.name,
            tuple(TensorSpec(t.name, t.dtype, t.shape) for t in info.inputs),
            tuple(TensorSpec(t.name, t.dtype, t.shape) for t in info.outputs),
        )
        self.remote = device
        self.remote_info = info
        self.sha256 = sha256
        self.blob_kind = kind
        self.source = source

    @property
    def source_kind(self) -> str:
        return self.remote_info.source

    def formats(self) -> dict[str, FixedFormat]:
        return {t.name: t.format for t in (*self.remote_info.inputs, *self.remote_info.outputs) if t.format}

    def info(self) -> ModelInfo:
        local = super().info()
        return ModelInfo(
            local.id,
            local.name,
            local.device,
            self.remote_info.source,
            local.inputs,
            local.outputs,
            {"agent_model_id": self.remote_info.id},
        )

    def _infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            request = pb.InferRequest(
                session=self.remote.session_id, model_id=self.remote_info.id, inputs=tensors.encode_all(feeds)
            )
            reply = self.remote.stub.Infer(request, timeout=self.remote.timeout_s, metadata=self.remote.metadata)
            return tensors.decode_all(reply.outputs)

        return self.remote.call(call, inference=True)

    def infer_stream(self, batches: Iterable[Mapping[str, Any]]) -> Iterator[Op]:
        """Send batches over one stream, answered in order: an ``Op`` per batch, with its outputs or
        its error status. A batch that fails does not end the stream; the agent going away does."""
        pending: list[Op] = []
        lock = threading.Lock()

        def requests() -> Iterator[pb.InferRequest]:
            for index, batch in enumerate(batches):
                op = Op(self, batch, user_data=index)
                with lock:
                    pending.append(op)
                yield pb.InferRequest(
                    session=self.remote.session_id,
                    model_id=self.remote_info.id,
                    request_id=index,
                    inputs=tensors.encode_all(dict(batch)),
                )

        self.remote.ensure_session()
        replies = self.remote.stub.InferStream(requests(), metadata=self.remote.metadata)
        try:
            for reply in replies:
                with lock:
                    op = pending.pop(0)
                if reply.status == "ok":
                    op.outputs, op.status = tensors.decode_all(reply.outputs), "ok"
                    op.future.set_result(op.outputs)
                else:
                    op.status, op.error = reply.status, reply.error
                    op.future.set_exception(InferenceError(reply.error, reply.status))
                yield op
        except grpc.RpcError as exc:
            raise self.remote.error(exc, inference=True) from None

    def _convert(self, rpc: str, name: str, values: Any) -> np.ndarray:
        def call() -> np.ndarray:
            request = pb.ConvertRequest(
                session=self.remote.session_id,
                model_id=self.remote_info.id,
                value=tensors.encode(name, np.asarray(values)),
            )
            method = getattr(self.remote.stub, rpc)
            return np.asarray(
                tensors.decode(method(request, timeout=self.remote.timeout_s, metadata=self.remote.metadata))
            )

        return self.remote.call(call)

    def quantize(self, name: str, values: Any) -> np.ndarray:
        return self._convert("Quantize", name, values)  # on the agent: the device's own conversion

    def dequantize(self, name: str, raw: Any) -> np.ndarray:
        return self._convert("Dequantize", name, raw)

    def selftest(self) -> SelftestResult:
        def call() -> SelftestResult:
            ref = pb.ModelRef(session=self.remote.session_id, model_id=self.remote_info.id)
            reply = self.remote.stub.Selftest(ref, timeout=self.remote.timeout_s, metadata=self.remote.metadata)
            return SelftestResult(self.id, reply.vectors, reply.passed, json.loads(reply.mismatches_json))

        return self.remote.call(call)

    def update_params(self, source: str | Path | bytes) -> None:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()

        def call() -> None:
            request = pb.UpdateParamsRequest(session=self.remote.session_id, model_id=self.remote_info.id, onnx=data)
            self.remote.stub.UpdateParams(request, timeout=self.remote.timeout_s, metadata=self.remote.metadata)

        self.remote.call(call)


class RemoteDevice(Device):
    kind = "remote"

    def __init__(
        self,
        uri: str,
        token: str | None = None,
        tls_ca: str | Path | None = None,
        tls: bool | None = None,
        lease_s: float = 30.0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(uri)
        self.address, self.device_name = parse_uri(uri)
        self.metadata = bearer(token, uri)
        self.timeout_s = timeout_s
        self.lease_s = lease_s
        self.channel = open_channel(self.address, tls_ca, tls)
        self.stub = pb_grpc.AgentStub(self.channel)
        self.session_id = ""
        self._device_info: DeviceInfo | None = None
        self._session_lock = threading.Lock()
        self._stop = threading.Event()
        try:
            self._open_session()
        except GatewrightError:
            self.channel.close()
            raise
        self._keeper = threading.Thread(target=self._keep_alive, name=f"{uri}-lease", daemon=True)
        self._keeper.start()

    @classmethod
    def discover(cls) -> list[str]:
        """The devices of the agents in ``GATEWRIGHT_AGENTS`` (comma-separated HOST:PORT)."""
        uris = []
        for address in filter(None, (a.strip() for a in os.environ.get("GATEWRIGHT_AGENTS", "").split(","))):
            try:
                uris += list_agent_devices(address)
            except GatewrightError as exc:
                log.warning("agent %s left out: %s", address, exc)
        return uris

    # -- the session ---------------------------------------------------------------------------------
    def _open_session(self) -> None:
        try:
            reply = self.stub.OpenSession(
                pb.OpenSessionRequest(device=self.device_name, lease_s=self.lease_s, client=f"pid {os.getpid()}"),
                timeout=min(self.timeout_s, 30.0),
                metadata=self.metadata,
            )
        except grpc.RpcError as exc:
            raise self.error(exc) from None
        self.session_id = reply.id
        self.lease_s = reply.lease_s
        self._device_info = DeviceInfo.from_json(json.loads(reply.device_info_json))

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            with contextlib.suppress(grpc.RpcError):  # the next call notices and reconnects
                self.stub.KeepAlive(
                    pb.SessionRef(session=self.session_id), timeout=self.lease_s / 3, metadata=self.metadata
                )

    def ensure_session(self) -> None:
        """After an agent restart: a new session with the same models loaded again."""
        try:
            self.stub.KeepAlive(pb.SessionRef(session=self.session_id), timeout=30.0, metadata=self.metadata)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise self.error(exc) from None
            try:
                self._reopen()
            except grpc.RpcError as again:
                raise self.error(again) from None

    def _reopen(self) -> None:
        with self._session_lock:
            log.warning("%s: the agent lost the session (restarted?); opening a new one and loading again", self.uri)
            self._open_session()
            for model in list(self.models):
                if isinstance(model, RemoteModel):
                    model.remote_info = self._upload_and_load(model.source, model.sha256, model.blob_kind)

    def call(self, run: Callable[[], R], inference: bool = False) -> R:
        """Run one RPC; a lost session is restored once, any other failure becomes a gatewright error."""
        try:
            return run()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or "session" not in (exc.details() or ""):
                raise self.error(exc, inference) from None
        try:
            self._reopen()
            return run()
        except grpc.RpcError as exc:
            raise self.error(exc, inference) from None

    def error(self, exc: grpc.RpcError, inference: bool = False) -> GatewrightError:
        code, details = exc.code(), exc.details() or ""
        trailing = dict(exc.trailing_metadata() or ())
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InputDataError(details)
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return DeviceError(f"{self.uri}: the agent refused the token ({details})")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
            message = (
                f"{self.uri}: the agent at {self.address} is unreachable or went away ({code.name}: {details}); "
                "check that `gatewright agent` runs there, then call again"
            )
            status = "deadline_exceeded" if code == grpc.StatusCode.DEADLINE_EXCEEDED else "unavailable"
            return InferenceError(message, status) if inference else DeviceError(message)
        if STATUS_KEY in trailing or code == grpc.StatusCode.INTERNAL:
            return InferenceError(details, str(trailing.get(STATUS_KEY, "internal")))
        return DeviceError(details)

    # -- the device API ------------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        assert self._device_info is not None
        remote = self._device_info
        return DeviceInfo(
            uri=self.uri,
            kind=self.kind,
            description=f"{remote.kind} on the agent at {self.address}: {remote.description}",
            max_models=remote.max_models,
            max_batch=remote.max_batch,
            dtypes=remote.dtypes,
            runs=remote.runs,
            queue_pairs=remote.queue_pairs,
            extra={"agent": self.address, "device": remote.to_json()},
        )

    def _load(self, source: Bundle | Path) -> Model:
        if isinstance(source, Bundle):
            data, kind, path = bundles.pack(source.path), "bundle", source.path
        else:
            data, kind, path = source.read_bytes(), "onnx", source
        sha256 = hashlib.sha256(data).hexdigest()
        info = self.call(lambda: self._upload_and_load(path, sha256, kind, data))
        return RemoteModel(self, info, sha256, kind, path)

    def _upload_and_load(self, path: Path, sha256: str, kind: str, data: bytes | None = None) -> ModelInfo:
        present = self.stub.HasBlob(pb.BlobRef(sha256=sha256), timeout=30.0, metadata=self.metadata).present
        if not present:
            if data is None:
                data = bundles.pack(path) if kind == "bundle" else path.read_bytes()
            payload = data

            def chunks() -> Iterator[pb.UploadChunk]:
                yield pb.UploadChunk(sha256=sha256, kind=kind, size=len(payload), data=payload[:CHUNK_BYTES])
                for start in range(CHUNK_BYTES, len(payload), CHUNK_BYTES):
                    yield pb.UploadChunk(data=payload[start : start + CHUNK_BYTES])

            self.stub.Upload(chunks(), timeout=self.timeout_s, metadata=self.metadata)
        reply = self.stub.Load(
            pb.LoadRequest(session=self.session_id, sha256=sha256), timeout=self.timeout_s, metadata=self.metadata
        )
        return ModelInfo.from_json(json.loads(reply.model_info_json))

    def _release(self, model: Model) -> None:
        if not isinstance(model, RemoteModel):
            return
        ref = pb.ModelRef(session=self.session_id, model_id=model.remote_info.id)
        try:
            self.stub.Unload(ref, timeout=30.0, metadata=self.metadata)
        except grpc.RpcError as exc:
            log.warning(
                "%s: unloading %s on the agent failed (%s); its lease will free it", self.uri, model.id, exc.details()
            )

    def agent_xstats(self) -> dict[str, Any]:
        """The agent's own counters for this session's models (time on the device, without the network)."""
        reply = self.call(
            lambda: self.stub.Stats(pb.SessionRef(session=self.session_id), timeout=30.0, metadata=self.metadata)
        )
        return dict(json.loads(reply.stats_json))

    def xstats(self) -> dict[str, float]:
        """Client-side counters (network included), and the agent's as ``agent.<name>`` where it answers."""
        values = super().xstats()
        try:
            remote = self.agent_xstats()["xstats"]
        except GatewrightError as exc:
            log.warning("%s: no counters from the agent (%s)", self.uri, exc)
            return values
        names = {m.remote_info.id: m.id for m in self.models if isinstance(m, RemoteModel)}
        for key, value in remote.items():
            parts = key.split(".")
            if parts[0] == "model":
                model_id = ".".join(parts[1:-1])
                key = f"model.{names.get(model_id, model_id)}.{parts[-1]}"
            values[f"agent.{key}"] = float(value)
        return values

    def close(self) -> None:
        if self.closed:
            return
        super().close()  # unloads every model
        self._stop.set()
        with contextlib.suppress(grpc.RpcError):  # the agent is gone or the session expired: nothing to free
            self.stub.CloseSession(pb.SessionRef(session=self.session_id), timeout=5.0, metadata=self.metadata)
        self.channel.close()


def bearer(token: str | None, where: str) -> tuple[tuple[str, str], ...]:
    """The call metadata with the token (or ``GATEWRIGHT_TOKEN``)."""
    token = token or os.environ.get("GATEWRIGHT_TOKEN")
    if not token:
        raise DeviceError(f"{where}: the agent needs a token; pass open(uri, token=...) or set GATEWRIGHT_TOKEN")
    return (("authorization", f"Bearer {token}"),)


def open_channel(address: str, tls_ca: str | Path | None = None, tls: bool | None = None) -> grpc.Channel:
    """A channel to an agent: TLS with ``tls_ca`` (or ``GATEWRIGHT_TLS_CA``), or the system roots with
    ``tls=True``; plaintext otherwise."""
    ca = tls_ca or os.environ.get("GATEWRIGHT_TLS_CA")
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # an agent that restarts is found again within about a second, not after minutes of backoff
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    if not (ca or tls):
        return grpc.insecure_channel(address, options)
    try:
        roots = Path(ca).read_bytes() if ca else None
    except OSError as exc:
        raise DeviceError(f"{ca}: cannot read the CA certificate ({exc.strerror})") from None
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(roots), options)


def list_agent_devices(address: str, token: str | None = None, tls_ca: str | Path | None = None) -> list[str]:
    """``remote://`` URIs of every device the agent at ``address`` serves."""
    metadata = bearer(token, f"agent {address}")
    channel = open_channel(address, tls_ca)
    try:
        reply = pb_grpc.AgentStub(channel).ListDevices(pb.ListDevicesRequest(), timeout=10.0, metadata=metadata)
    except grpc.RpcError as exc:
        raise DeviceError(f"agent {address}: {exc.code().name}: {exc.details()}") from None
    finally:
        channel.close()
    return [f"remote://{address}/{json.loads(info)['uri']}" for info in reply.device_info_json]


__all__ = ["RemoteDevice", "RemoteModel", "list_agent_devices", "parse_uri"]
