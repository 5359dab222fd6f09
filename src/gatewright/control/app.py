"""Run the control plane: its API and UI, the reconcile loop, the build queue and the inference server
that serves the deployments (REST and gRPC), all in one event loop, stopped together by SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gatewright.control.api import create_app
from gatewright.control.db import database_url, open_database, redact
from gatewright.control.inventory import Inventory
from gatewright.control.jobs import JobQueue, LocalExecutor, Logs
from gatewright.control.reconcile import Controller, Endpoints
from gatewright.errors import GatewrightError
from gatewright.serve import app as serving
from gatewright.serve.server import InferenceServer
from gatewright.store import open_store

log = logging.getLogger("gatewright.control")
TOKEN_ENV = "GATEWRIGHT_CONTROL_TOKEN"


@dataclass
class ControlConfig:
    data: Path = Path("gatewright-data")
    host: str = "127.0.0.1"
    port: int = 7070
    http_port: int = 8080
    grpc_port: int = 8081
    public_host: str | None = None  # the host name in published endpoints (default: host, or this machine's)
    db: str | None = None  # SQLAlchemy URL; default SQLite in the data folder
    store: str | None = None  # artifact store URI; default a local store in the data folder
    token: str | None = None
    allowed_roots: list[Path] = field(default_factory=list)
    build_concurrency: int = 1


def control_token(config: ControlConfig) -> tuple[str, Path | None]:
    """The API token: --token, else GATEWRIGHT_CONTROL_TOKEN, else the one kept in DATA/token (made once,
    readable by its owner only). Returns the token and the file it is kept in, if any."""
    token = config.token or os.environ.get(TOKEN_ENV)
    if token:
        return token, None
    path = config.data / "token"
    if path.is_file():
        return path.read_text().strip(), path
    token = secrets.token_urlsafe(24)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.replace(temporary, path)
    return token, path


async def run_control(config: ControlConfig, on_listening: Callable[[str], None] | None = None) -> None:
    data = config.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    token, token_file = control_token(config)
    url = database_url(config.db, data)
    sessions = open_database(url)
    store = open_store(config.store or (data / "store").as_uri())
    logs = Logs(sessions)
    jobs = JobQueue(sessions, logs, data / "jobs", LocalExecutor(), config.build_concurrency)
    (data / "serving").mkdir(exist_ok=True)
    server = InferenceServer(repository=data / "serving", autoload=False)
    roots = [data / "uploads", *config.allowed_roots]
    controller = Controller(sessions, logs, jobs, Inventory(sessions), store, server, data, roots)
    app = create_app(controller, token, data / "uploads")

    stop = serving.stop_event()
    control_socket = serving.listen(config.host, config.port, "the control API")
    bound: dict[str, int] = {}
    inference_up = asyncio.Event()

    def inference_listening(http_port: int, grpc_port: int) -> None:
        bound.update(http=http_port, grpc=grpc_port)
        inference_up.set()

    inference = asyncio.create_task(
        serving.serve(server, config.host, config.http_port, config.grpc_port, inference_listening, stop)
    )
    waiter = asyncio.create_task(inference_up.wait())
    await asyncio.wait([inference, waiter], return_when=asyncio.FIRST_COMPLETED)
    if not inference_up.is_set():
        control_socket.close()
        waiter.cancel()
        await inference  # raises why it could not start
        raise GatewrightError("the inference server stopped at start")
    host = config.public_host or (config.host if config.host not in ("0.0.0.0", "::") else _hostname())
    controller.endpoints = Endpoints(host, bound["http"], bound["grpc"])
    port = control_socket.getsockname()[1]
    if on_listening:
        where = f"token in {token_file}" if token_file else "token from --token / " + TOKEN_ENV
        on_listening(
            f"control plane on http://{host}:{port} (inference REST http://{host}:{bound['http']}, "
            f"gRPC {host}:{bound['grpc']}); {where}; database {redact(url)}; store {store.uri}"
        )
    loop = asyncio.create_task(controller.run())
    try:
        await serving.run_until(serving.asgi_server(app, config.host, port), control_socket, stop)
    finally:
        stop.set()
        loop.cancel()
        await controller.close()
        await inference
        control_socket.close()


def _hostname() -> str:
    import socket

    return socket.getfqdn()


def run(config: ControlConfig, on_listening: Callable[[str], None]) -> None:
    import uvloop

    uvloop.run(run_control(config, on_listening))
