"""The control plane's REST API (``/api/v1``, used by the CLI and the web UI) and the UI's pages.

The contract is in docs/control.md. Every route but login needs the token (a bearer header, or the
cookie login sets for the browser). Errors are ``{"error": "..."}`` with a 4xx status; a spec error
names the field and how to fix it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import FastAPI, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gatewright.control.db import AgentRow, DeploymentRow, JobRow
from gatewright.control.reconcile import ConflictError, Controller
from gatewright.control.spec import SpecError, parse
from gatewright.devices.remote import list_agent_devices
from gatewright.errors import GatewrightError
from gatewright.targets import TARGETS
from gatewright.ui import STATIC

COOKIE = "gatewright_token"
MAX_UPLOAD_BYTES = 512 << 20
UPLOAD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def stamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite keeps no zone; every time stored is UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def deployment_json(row: DeploymentRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "spec": row.spec,
        "generation": row.generation,
        "observed_generation": row.observed,
        "phase": row.phase,
        "reason": row.reason,
        "job": row.job_id,
        "device": row.device,
        "bundle": row.bundle,
        "endpoints": row.endpoints or {},
        "created": stamp(row.created),
        "updated": stamp(row.updated),
    }


def job_json(job: JobRow) -> dict[str, Any]:
    return {
        "id": job.id,
        "deployment": job.deployment,
        "generation": job.generation,
        "kind": job.kind,
        "state": job.state,
        "reason": job.reason,
        "created": stamp(job.created),
        "started": stamp(job.started),
        "finished": stamp(job.finished),
    }


def create_app(controller: Controller, token: str, uploads: Path) -> FastAPI:
    app = FastAPI(title="gatewright control plane", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json")
    expected = hashlib.sha256(token.encode()).digest()
    forward = httpx.AsyncClient(timeout=60.0)  # to the inference server, keeping its connections open

    def authorized(request: Request) -> bool:
        given = request.cookies.get(COOKIE, "")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), expected)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if path.startswith("/api/v1/") and path != "/api/v1/login" and not authorized(request):
            return _error(401, "a token is needed: send 'Authorization: Bearer TOKEN' (or log in on the web page)")
        try:
            return await call_next(request)
        except ApiError as exc:
            return _error(exc.status, str(exc))

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return _error(exc.status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(400, problems)

    # -- login ----------------------------------------------------------------------------------------
    @app.post("/api/v1/login", status_code=204)
    async def login(request: Request) -> Response:
        body = await _json(request)
        given = body.get("token") if isinstance(body, dict) else None
        if not isinstance(given, str) or not hmac.compare_digest(hashlib.sha256(given.encode()).digest(), expected):
            return _error(401, "wrong token")
        response = Response(status_code=204)
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    @app.post("/api/v1/logout", status_code=204)
    async def logout() -> Response:
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return response

    # -- deployments ----------------------------------------------------------------------------------
    @app.get("/api/v1/deployments")
    async def list_deployments() -> dict[str, Any]:
        return {"deployments": [deployment_json(r) for r in controller.deployments()]}

    @app.post("/api/v1/deployments", status_code=201)
    async def apply(request: Request, response: Response) -> dict[str, Any]:
        deployment = _spec(await _body(request))
        row, created = _apply(deployment)
        response.status_code = 201 if created else 200
        return deployment_json(row)

    @app.put("/api/v1/deployments/{name}")
    async def put(name: str, request: Request, response: Response) -> dict[str, Any]:
        deployment = _spec(await _body(request))
        if deployment.name != name:
            raise ApiError(400, f"metadata.name is '{deployment.name}' but the URL names '{name}'; make them agree")
        row, created = _apply(deployment)
        response.status_code = 201 if created else 200
        return deployment_json(row)

    @app.get("/api/v1/deployments/{name}")
    async def get(name: str) -> dict[str, Any]:
        return deployment_json(_deployment(name))

    @app.delete("/api/v1/deployments/{name}", status_code=202)
    async def delete(name: str) -> dict[str, Any]:
        try:
            return deployment_json(controller.delete(name))
        except KeyError:
            raise ApiError(404, _unknown(name)) from None

    @app.get("/api/v1/deployments/{name}/logs")
    async def deployment_logs(name: str, follow: bool = False) -> Response:
        _deployment(name)
        if not follow:
            return PlainTextResponse("".join(f"{line.text}\n" for line in controller.logs.lines(deployment=name)))
        return _events(controller.logs.follow(lambda: controller.finished(name), deployment=name))

    @app.post("/api/v1/deployments/{name}/infer")
    async def infer(name: str, request: Request) -> dict[str, Any]:
        row = _deployment(name)
        if row.phase != "Ready" or not row.endpoints:
            raise ApiError(409, f"deployment {name} is {row.phase}, not Ready ({row.reason}); wait for it to be Ready")
        body = await request.body()
        start = time.perf_counter()
        url = f"http://127.0.0.1:{controller.endpoints.http_port}/v2/models/{name}/infer"
        try:
            answer = await forward.post(url, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise ApiError(502, f"the inference server did not answer: {exc}") from None
        latency_ms = (time.perf_counter() - start) * 1e3
        try:
            payload = answer.json()
        except ValueError:
            payload = {"error": answer.text}
        return {"status": answer.status_code, "response": payload, "latency_ms": round(latency_ms, 3)}

    # -- uploads --------------------------------------------------------------------------------------
    @app.post("/api/v1/uploads", status_code=201)
    async def upload(file: UploadFile) -> dict[str, str]:
        filename = Path(file.filename or "").name
        if not UPLOAD_NAME.match(filename) or filename in (".", ".."):
            raise ApiError(
                400, f"upload name '{file.filename}': use a plain file name (letters, digits, '.', '_', '-')"
            )
        digest = hashlib.sha256()
        uploads.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=uploads, prefix=".upload-")
        try:
            size = 0
            with os.fdopen(handle, "wb") as out:
                while chunk := await file.read(1 << 20):
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise ApiError(413, f"upload {filename}: larger than {MAX_UPLOAD_BYTES >> 20} MiB")
                    digest.update(chunk)
                    out.write(chunk)
            folder = uploads / digest.hexdigest()
            folder.mkdir(exist_ok=True)
            os.replace(temporary, folder / filename)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        return {"uri": (folder / filename).resolve().as_uri(), "sha256": digest.hexdigest(), "bytes": str(size)}

    # -- jobs -----------------------------------------------------------------------------------------
    @app.get("/api/v1/jobs")
    async def list_jobs(deployment: str | None = None) -> dict[str, Any]:
        return {"jobs": [job_json(j) for j in controller.jobs.list(deployment)]}

    @app.get("/api/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        return job_json(_job(job_id))

    @app.get("/api/v1/jobs/{job_id}/logs")
    async def job_logs(job_id: str, follow: bool = False) -> Response:
        _job(job_id)
        if not follow:
            return PlainTextResponse("".join(f"{line.text}\n" for line in controller.logs.lines(job_id=job_id)))
        return _events(controller.logs.follow(lambda: controller.jobs.state(job_id), job_id=job_id))

    @app.post("/api/v1/jobs/{job_id}/cancel", status_code=202)
    async def cancel_job(job_id: str) -> dict[str, Any]:
        _job(job_id)
        return job_json(await controller.jobs.cancel(job_id))

    # -- devices, agents, targets ---------------------------------------------------------------------
    @app.get("/api/v1/devices")
    async def list_devices() -> dict[str, Any]:
        described = await asyncio.to_thread(controller.inventory.describe, controller.placed())
        return {"devices": described, "problems": controller.inventory.problems()}

    @app.get("/api/v1/agents")
    async def list_agents() -> dict[str, Any]:
        with controller.sessions() as session:
            rows = session.query(AgentRow).order_by(AgentRow.address).all()
        return {"agents": [{"address": a.address, "created": stamp(a.created)} for a in rows]}

    @app.post("/api/v1/agents", status_code=201)
    async def add_agent(request: Request) -> dict[str, Any]:
        body = await _json(request)
        address = body.get("address") if isinstance(body, dict) else None
        token = body.get("token", "") if isinstance(body, dict) else ""
        if not isinstance(address, str) or not ADDRESS.match(address):
            raise ApiError(400, "give the agent's 'address' as HOST:PORT (and its 'token')")
        if not isinstance(token, str):
            raise ApiError(400, "'token' must be a string")
        try:
            found = await asyncio.to_thread(list_agent_devices, address, token or None)
        except GatewrightError as exc:
            raise ApiError(400, f"agent {address} cannot be reached with that token: {exc}") from None
        with controller.sessions() as session:
            session.merge(AgentRow(address=address, token=token))
            session.commit()
        await asyncio.to_thread(controller.inventory.devices, True)
        return {"address": address, "devices": found}

    @app.delete("/api/v1/agents/{address}")
    async def remove_agent(address: str) -> dict[str, str]:
        with controller.sessions() as session:
            row = session.get(AgentRow, address)
            if row is None:
                raise ApiError(404, f"no agent {address} is registered")
            session.delete(row)
            session.commit()
        await asyncio.to_thread(controller.inventory.devices, True)
        return {"address": address}

    @app.get("/api/v1/bench/runs")
    async def bench_runs(experiment: str | None = None, batch: str | None = None) -> dict[str, Any]:
        """The bench results (``gatewright bench run`` writes them to this database)."""
        from gatewright.bench.runner import records

        found = await asyncio.to_thread(records, controller.sessions, None, [experiment] if experiment else None, batch)
        return {"runs": found}

    @app.get("/api/v1/targets")
    async def list_targets() -> dict[str, Any]:
        return {
            "targets": [
                {"name": t.name, "family": t.family, "place_and_route": t.place_and_route, "luts": t.luts}
                for t in TARGETS.values()
            ]
        }

    # -- the UI's files -------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise ApiError(404, f"no page /{name}")
        return FileResponse(path)

    # -- helpers --------------------------------------------------------------------------------------
    def _apply(deployment: Any) -> tuple[DeploymentRow, bool]:
        try:
            return controller.apply(deployment)
        except ConflictError as exc:
            raise ApiError(409, str(exc)) from None

    def _deployment(name: str) -> DeploymentRow:
        try:
            return controller.get(name)
        except KeyError:
            raise ApiError(404, _unknown(name)) from None

    def _unknown(name: str) -> str:
        known = ", ".join(r.name for r in controller.deployments()) or "none"
        return f"no deployment '{name}' (deployments: {known})"

    def _job(job_id: str) -> JobRow:
        try:
            return controller.jobs.get(job_id)
        except KeyError:
            raise ApiError(404, f"no job '{job_id}'") from None

    return app


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None


async def _body(request: Request) -> Any:
    """A spec body: JSON, or YAML when the content type says so."""
    raw = await request.body()
    kind = request.headers.get("content-type", "")
    if "yaml" in kind:
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ApiError(400, f"the body is not valid YAML: {exc}") from None
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(
            400, f"the body is not valid JSON ({exc}); send YAML with Content-Type: application/yaml"
        ) from None


def _spec(data: Any) -> Any:
    try:
        return parse(data)
    except SpecError as exc:
        raise ApiError(400, str(exc)) from None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _events(lines: AsyncIterator[tuple[str, str]]) -> StreamingResponse:
    """Server-sent events: ``data: LINE`` per line, then ``event: end`` with the final state."""

    async def stream() -> AsyncIterator[bytes]:
        async for kind, text in lines:
            prefix = "event: end\n" if kind == "end" else ""
            body = "".join(f"data: {part}\n" for part in text.split("\n"))
            yield f"{prefix}{body}\n".encode()

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )
