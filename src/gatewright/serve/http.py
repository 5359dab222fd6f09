"""The REST front end: the Open Inference Protocol v2 (KServe / Triton paths and JSON), the binary
tensor data extension, Triton's extensions, KServe's v1 ``:predict``, and ``/metrics``.

A plain ASGI application (no framework: the routing is a handful of patterns, and every microsecond
of a batch-1 request counts). Every error is answered as ``{"error": "..."}`` with its status code.
"""

from __future__ import annotations

import base64
import gzip
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gatewright.serve.errors import NotFoundError, RequestError, ServeError, TooLargeError
from gatewright.serve.infer import (
    InferRequest,
    OutputTensor,
    RequestedOutput,
    failed,
    read_shm,
    run,
    shm_ref,
    succeeded,
)
from gatewright.serve.metrics import registry_for
from gatewright.serve.repository import config_json
from gatewright.serve.server import InferenceServer
from gatewright.serve.tensors import check_datatype, check_shape, datatype_of, from_json, from_raw, to_json_data

log = logging.getLogger("gatewright.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = [(b"content-type", b"application/json")]
HEADER_LENGTH = b"inference-header-content-length"
_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(|/ready|/infer|/config|/stats|/trace/setting)$")
_REPO = re.compile(r"^/v2/repository/models/([^/]+)/(load|unload)$")
_SHM = re.compile(r"^/v2/(system|cuda)sharedmemory(?:/region/([^/]+))?/(status|register|unregister)$")
_V1 = re.compile(r"^/v1/models/([^/:]+)(:predict)?$")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


class Response(Exception):
    """A complete answer, raised from deep inside a handler (used for errors)."""

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or JSON


def _error(status: int, message: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return status, orjson.dumps({"error": message}), JSON


class HttpApp:
    """The ASGI application."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        self.registry = registry_for(server)
        self._openapi: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, body, headers = await self._route(scope, receive)
        except ServeError as exc:
            status, body, headers = _error(exc.http_status, str(exc))
        except Response as answer:
            status, body, headers = answer.status, answer.body, answer.headers
        except Exception as exc:  # a fault of ours: answer 500, log it, keep serving
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            status, body, headers = _error(500, f"internal server error: {type(exc).__name__}: {exc}")
        if len(body) > 512 and _accepts(scope, b"gzip"):
            body = gzip.compress(body, 1)
            headers = [*headers, (b"content-encoding", b"gzip")]
        # a Content-Length (not uvicorn's default, chunked encoding): the body then leaves in one piece, without the
        # extra chunk terminator, and the client knows at once when it has all of it
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        path: str = scope["path"]
        method: str = scope["method"]
        server = self.server
        if path == "/v2/models/stats":
            _allow(method, "GET", path)
            return 200, orjson.dumps({"model_stats": server.statistics()}), JSON
        match = _MODEL.match(path)
        if match:
            name, version, action = match.group(1), match.group(2) or "", match.group(3)
            if action == "/infer":
                _allow(method, "POST", path)
                return await self._infer(scope, receive, name, version)
            if action == "/trace/setting":
                return await self._trace(scope, receive, method, name)
            _allow(method, "GET", path)
            if action == "":
                served = server.model(name, version)
                return 200, orjson.dumps(served.metadata(server.versions(name))), JSON
            if action == "/ready":
                try:
                    server.model(name, version)
                except ServeError as exc:
                    if isinstance(exc, NotFoundError):
                        raise
                    return _error(400, f"model '{name}' is not ready: {exc}")
                return 200, b"", JSON
            if action == "/config":
                return 200, orjson.dumps(config_json(server.model(name, version).config)), JSON
            return 200, orjson.dumps({"model_stats": server.statistics(name, version)}), JSON
        if path in ("/v2/health/live", "/v2/health/ready"):
            _allow(method, "GET", path)
            if path.endswith("live"):
                return 200, b'{"live":true}', JSON
            ready = server.ready()
            return (200 if ready else 400), orjson.dumps({"ready": ready}), JSON
        if path in ("/v2", "/v2/"):
            _allow(method, "GET", path)
            return 200, orjson.dumps(server.metadata()), JSON
        if path == "/metrics":
            _allow(method, "GET", path)
            return 200, generate_latest(self.registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())]
        if path == "/v2/repository/index":
            _allow(method, "POST", path)
            body = await self._json_body(scope, receive, optional=True)
            ready = body.get("ready", False)
            if not isinstance(ready, bool):
                raise RequestError("repository index: 'ready' must be true or false")
            return 200, orjson.dumps(server.index(ready)), JSON
        match = _REPO.match(path)
        if match:
            _allow(method, "POST", path)
            return await self._repository(scope, receive, match.group(1), match.group(2))
        match = _SHM.match(path)
        if match:
            return await self._shared_memory(scope, receive, method, *match.groups())
        if path == "/v2/trace/setting":
            return await self._trace(scope, receive, method, "")
        if path == "/v2/logging":
            if method == "GET":
                return 200, orjson.dumps(server.log_settings), JSON
            _allow(method, "POST", path, also="GET")
            update = await self._json_body(scope, receive)
            return 200, orjson.dumps(server.update_log_settings(update)), JSON
        match = _V1.match(path)
        if match:
            return await self._v1(scope, receive, method, match.group(1), bool(match.group(2)))
        if path == "/v1/models":
            _allow(method, "GET", path)
            return 200, orjson.dumps({"models": sorted(server.models)}), JSON
        if path == "/":
            _allow(method, "GET", path)
            return 200, b'{"status":"alive"}', JSON
        if path in ("/openapi.json", "/v2/openapi.json"):
            _allow(method, "GET", path)
            return 200, self.openapi(), JSON
        raise NotFoundError(
            f"no endpoint {path}; the Open Inference Protocol's paths start with /v2 (see /openapi.json)"
        )

    def openapi(self) -> bytes:
        if self._openapi is None:
            self._openapi = resources.files("gatewright.serve").joinpath("openapi.json").read_bytes()
        return self._openapi

    # -- bodies ---------------------------------------------------------------------------------------
    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.server.max_request_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLargeError(f"the request body has {int(declared)} bytes; this server takes at most {limit}")
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError("the client closed the connection before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise TooLargeError(f"the request body exceeds {limit} bytes, the most this server takes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = _header(scope, b"content-encoding")
        if encoding and encoding not in ("identity",):
            body = _decompress(body, encoding, limit)
        return body

    async def _json_body(self, scope: Scope, receive: Receive, optional: bool = False) -> dict[str, Any]:
        body = await self._body(scope, receive)
        if not body.strip() and optional:
            return {}
        data = _loads(body)
        if not isinstance(data, dict):
            raise RequestError("the request body must be a JSON object")
        return data

    # -- inference ------------------------------------------------------------------------------------
    async def _infer(self, scope: Scope, receive: Receive, name: str, version: str) -> tuple[int, bytes, list]:
        start = time.perf_counter_ns()
        served = None
        try:
            body = await self._body(scope, receive)
            header_length = _header(scope, HEADER_LENGTH)
            request = self._parse_infer(body, header_length, name, version)
            decoded = time.perf_counter_ns()
            served, outputs, timing = await run(self.server, request)
            encoding = time.perf_counter_ns()
            answer = _encode_infer(served.name, served.version, request.id, outputs)
            stamps = (start, decoded, encoding, time.perf_counter_ns())
            succeeded(self.server, served, request.id, timing, stamps, "HTTP")
            return answer
        except ServeError as exc:
            failed(self.server, served, name, version, start, exc)
            raise

    def _parse_infer(self, body: bytes, header_length: str | None, name: str, version: str) -> InferRequest:
        if header_length is not None:
            if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
                raise RequestError(
                    f"Inference-Header-Content-Length {header_length!r} is not a length within the "
                    f"{len(body)}-byte body"
                )
            split = int(header_length)
            header, binary = body[:split], memoryview(body)[split:]
        else:
            header, binary = body, memoryview(b"")
        data = _loads(header)
        if type(data) is not dict:
            raise RequestError("the inference request must be a JSON object")
        inputs_json = data.get("inputs")
        if type(inputs_json) is not list or not inputs_json:
            raise RequestError("the inference request needs 'inputs': a list of tensors")
        request = InferRequest(name, version, _request_id(data.get("id")), {})
        params = data.get("parameters")
        if params is not None:
            request.binary_outputs = bool(_params(params, "request").get("binary_data_output", False))
        at = 0
        for tensor in inputs_json:
            if type(tensor) is not dict:
                raise RequestError("each input must be an object with name, shape, datatype and data")
            tname = tensor.get("name")
            if type(tname) is not str:
                raise RequestError("an input has no 'name'")
            shape = check_shape(tname, tensor.get("shape"))
            datatype = check_datatype(tname, tensor.get("datatype"))
            tparams = tensor.get("parameters")
            ref = size = None
            if tparams is not None:  # binary data or shared memory instead of 'data'
                tparams = _params(tparams, f"input '{tname}'")
                size = tparams.get("binary_data_size")
                ref = shm_ref(tparams, f"input '{tname}'")
            if ref is not None:
                array = read_shm(self.server, ref, tname, datatype, shape)
            elif size is not None:
                if not isinstance(size, int) or size < 0 or at + size > len(binary):
                    raise RequestError(f"input '{tname}': binary_data_size {size!r} runs past the binary data")
                array = from_raw(tname, datatype, shape, binary[at : at + size])
                at += size
            elif "data" in tensor:
                array = from_json(tname, datatype, shape, tensor["data"])
            else:
                raise RequestError(f"input '{tname}' has no 'data' (or binary_data_size / shared memory parameters)")
            if tname in request.inputs:
                raise RequestError(f"input '{tname}' is given twice")
            request.inputs[tname] = (datatype, array)
        if at != len(binary):
            raise RequestError(f"the body holds {len(binary) - at} bytes of binary data that no input claims")
        outputs_json = data.get("outputs")
        if outputs_json is not None:
            if not isinstance(outputs_json, list):
                raise RequestError("'outputs' must be a list of {name, parameters}")
            request.outputs = []
            for out in outputs_json:
                if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                    raise RequestError("each requested output needs a 'name'")
                oparams = _params(out.get("parameters"), f"output '{out['name']}'")
                binary_flag = oparams.get("binary_data")
                count = oparams.get("classification", 0)
                if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                    raise RequestError(f"output '{out['name']}': classification must be a whole number")
                request.outputs.append(
                    RequestedOutput(
                        out["name"],
                        None if binary_flag is None else bool(binary_flag),
                        count,
                        shm_ref(oparams, f"output '{out['name']}'"),
                    )
                )
        return request

    # -- repository, shared memory, trace -------------------------------------------------------------
    async def _repository(self, scope: Scope, receive: Receive, name: str, action: str) -> tuple[int, bytes, list]:
        body = await self._json_body(scope, receive, optional=True)
        params = _params(body.get("parameters"), "repository request")
        if action == "unload":
            await self.server.unload(name)
            return 200, b"{}", JSON
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            raise RequestError("load: the 'config' parameter must be the model configuration as a JSON string")
        files: dict[str, bytes] = {}
        for key, value in params.items():
            if key.startswith("file:"):
                if not isinstance(value, str):
                    raise RequestError(f"load: parameter '{key}' must hold the file's content in base64")
                try:
                    files[key[5:]] = base64.b64decode(value, validate=True)
                except ValueError:
                    raise RequestError(f"load: parameter '{key}' is not valid base64") from None
        if files and config is None:
            raise RequestError("load: file parameters need the 'config' parameter too (Triton's rule)")
        await self.server.load(name, config, files or None)
        return 200, b"{}", JSON

    async def _shared_memory(
        self, scope: Scope, receive: Receive, method: str, kind: str, region: str | None, action: str
    ) -> tuple[int, bytes, list]:
        server = self.server
        if action == "status":
            _allow(method, "GET", scope["path"])
            if kind == "cuda":
                if region:
                    raise NotFoundError(f"no CUDA shared memory region '{region}' is registered")
                return 200, b"[]", JSON
            return 200, orjson.dumps(server.shm_status(region or "")), JSON
        _allow(method, "POST", scope["path"])
        if kind == "cuda":
            if action == "unregister" and not region:
                return 200, b"{}", JSON
            raise server.cuda_shm_unsupported()
        if action == "unregister":
            server.shm_unregister(region or "")
            return 200, b"{}", JSON
        if not region:
            raise NotFoundError("register a region at /v2/systemsharedmemory/region/<name>/register")
        body = await self._json_body(scope, receive)
        key, offset, size = body.get("key"), body.get("offset", 0), body.get("byte_size")
        if not isinstance(key, str) or not isinstance(offset, int) or not isinstance(size, int):
            raise RequestError("register: give 'key' (string), 'offset' and 'byte_size' (integers)")
        server.shm_register(region, key, offset, size)
        return 200, b"{}", JSON

    async def _trace(self, scope: Scope, receive: Receive, method: str, model: str) -> tuple[int, bytes, list]:
        if method == "GET":
            return 200, orjson.dumps(_flat_trace(self.server.trace_settings(model))), JSON
        _allow(method, "POST", scope["path"], also="GET")
        body = await self._json_body(scope, receive, optional=True)
        update: dict[str, list[str] | None] = {}
        for key, value in body.items():
            values = value if isinstance(value, list) else [value]
            plain = all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values)
            if value is not None and not plain:
                raise RequestError(f"trace setting {key!r} takes a string, a number, a list of them, or null")
            update[key] = None if value is None else [str(v) for v in values]
        return 200, orjson.dumps(_flat_trace(self.server.trace_settings(model, update))), JSON

    # -- KServe v1 ------------------------------------------------------------------------------------
    async def _v1(
        self, scope: Scope, receive: Receive, method: str, name: str, predict: bool
    ) -> tuple[int, bytes, list]:
        if not predict:
            _allow(method, "GET", scope["path"])
            served = self.server.model(name)
            return 200, orjson.dumps({"name": served.name, "ready": True}), JSON
        _allow(method, "POST", scope["path"])
        start = time.perf_counter_ns()
        body = await self._json_body(scope, receive)
        served = self.server.model(name)
        instances = body.get("instances", body.get("inputs"))
        if not isinstance(instances, list) or not instances:
            raise RequestError("v1 predict: give 'instances', a non-empty list of inputs (one per sample)")
        request = InferRequest(model=name, version="")
        specs = list(served.inputs.values())
        try:
            if len(specs) == 1:
                columns = {specs[0].name: instances}
            else:
                if not all(isinstance(i, dict) for i in instances):
                    names = ", ".join(s.name for s in specs)
                    raise RequestError(f"v1 predict: the model has inputs {names}; give each instance as an object")
                missing = [s.name for s in specs if any(s.name not in i for i in instances)]
                if missing:
                    raise RequestError(f"v1 predict: an instance has no {', '.join(missing)}; give every input")
                columns = {s.name: [i[s.name] for i in instances] for s in specs}
            for spec in specs:
                dtype = object if spec.dtype == "str" else np.dtype(spec.dtype)
                array = np.array(columns[spec.name], dtype=dtype)
                datatype = datatype_of(spec.dtype)
                if datatype == "BYTES":
                    array = np.array([str(v).encode() for v in array.ravel()], dtype=object).reshape(array.shape)
                request.inputs[spec.name] = (datatype, array)
        except (ValueError, TypeError, OverflowError):
            raise RequestError("v1 predict: the instances do not form arrays of the model's input type") from None
        served, outputs, timing = await run(self.server, request)
        columns_out = {o.name: _plain(o) for o in outputs}
        if len(columns_out) == 1:
            predictions = next(iter(columns_out.values()))
        else:
            count = len(instances)
            predictions = [{k: v[i] for k, v in columns_out.items()} for i in range(count)]
        end = time.perf_counter_ns()
        served.stats.succeeded(end - start, 0, 0, timing.samples, timing)
        return 200, orjson.dumps({"predictions": predictions}), JSON


def _plain(tensor: OutputTensor) -> list[Any]:
    assert tensor.array is not None
    if tensor.datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in tensor.array.tolist()]
    return tensor.array.tolist()


def _encode_infer(name: str, version: int, request_id: str, outputs: list[OutputTensor]) -> tuple[int, bytes, list]:
    tensors = []
    blobs = []
    for out in outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if out.shm is not None:
            entry["parameters"] = {
                "shared_memory_region": out.shm.region,
                "shared_memory_offset": out.shm.offset,
                "shared_memory_byte_size": out.shm.byte_size,
            }
        elif out.binary:
            raw = out.raw()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            assert out.array is not None
            entry["data"] = to_json_data(out.array, out.datatype)
        tensors.append(entry)
    response: dict[str, Any] = {"model_name": name, "model_version": str(version), "outputs": tensors}
    if request_id:
        response["id"] = request_id
    header = orjson.dumps(response, option=_NUMPY)
    if not blobs:
        return 200, header, JSON
    headers = [
        (b"content-type", b"application/octet-stream"),
        (HEADER_LENGTH, str(len(header)).encode()),
    ]
    return 200, b"".join([header, *blobs]), headers


def _flat_trace(settings: dict[str, list[str]]) -> dict[str, Any]:
    """Triton's REST trace settings: single values as strings, trace_level as a list."""
    return {k: (v if k == "trace_level" else (v[0] if v else "")) for k, v in settings.items()}


def _params(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"{what}: 'parameters' must be an object")
    return value


def _request_id(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError("'id' must be a string")
    return value


def _loads(body: bytes | memoryview) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None


def _allow(method: str, allowed: str, path: str, also: str = "") -> None:
    """405 unless ``method`` is ``allowed``; the Allow header lists every method the path takes."""
    if method != allowed:
        methods = f"{also}, {allowed}" if also else allowed
        raise Response(
            405, orjson.dumps({"error": f"{path} takes {methods}, not {method}"}), [*JSON, (b"allow", methods.encode())]
        )


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name, made once per request: a request asks for several."""
    headers: dict[bytes, bytes] | None = scope.get("gatewright.headers")
    if headers is None:
        headers = scope["gatewright.headers"] = {key: value for key, value in reversed(scope["headers"])}  # first wins
    return headers


def _header(scope: Scope, name: bytes) -> str | None:
    value = _headers(scope).get(name)
    if value is None:
        return None
    return value.decode("latin-1").strip().lower() if name != HEADER_LENGTH else value.decode("latin-1").strip()


def _accepts(scope: Scope, encoding: bytes) -> bool:
    return encoding in _headers(scope).get(b"accept-encoding", b"")


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding not in ("gzip", "deflate"):
        raise RequestError(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestError(f"the request body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise TooLargeError(f"the request body inflates past {limit} bytes, the most this server takes")
    if not inflater.eof:
        raise RequestError(f"the request body's {encoding} data ends early (truncated)")
    return out
