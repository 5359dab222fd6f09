"""Run the server: REST (uvicorn, uvloop, httptools) and gRPC (grpc.aio) in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import uvicorn

from gatewright.errors import GatewrightError
from gatewright.serve import grpc as grpc_front
from gatewright.serve.http import HttpApp
from gatewright.serve.server import InferenceServer

log = logging.getLogger("gatewright.serve")


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the caller decides when it stops (``should_exit``), so
    several servers share one process and stop together, cleanly."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def listen(host: str, port: int, what: str) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free port)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GatewrightError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}") from None
    return sock


async def run_until(server: uvicorn.Server, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve on ``sock`` until ``stop`` is set."""

    async def watch() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(watch())
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        stop.set()  # one server stopping (a failure) stops the others with it


def asgi_server(app: Any, host: str, port: int) -> QuietServer:
    return QuietServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_keep_alive=75,
        )
    )


async def serve(
    server: InferenceServer,
    host: str = "0.0.0.0",
    http_port: int = 8080,
    grpc_port: int = 8081,
    on_listening: Callable[[int, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (by default: SIGINT or SIGTERM); models load in the background
    (the server is live at once, ready once they are loaded). ``on_listening`` gets the bound ports
    (port 0 picks a free one)."""
    stop = stop or stop_event()
    limit = server.max_request_bytes + (1 << 20)
    grpc_server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", -1)]
    )
    grpc_front.add_to(grpc_server, server)
    try:
        bound_grpc = grpc_server.add_insecure_port(f"{host}:{grpc_port}")
    except RuntimeError:
        bound_grpc = 0
    if bound_grpc == 0:
        raise GatewrightError(f"cannot listen for gRPC on {host}:{grpc_port}: the port is taken or not allowed")
    await grpc_server.start()
    loading = asyncio.create_task(server.start())
    sock = None
    try:
        sock = listen(host, http_port, "HTTP")
        if on_listening:
            on_listening(sock.getsockname()[1], bound_grpc)
        await run_until(asgi_server(HttpApp(server), host, http_port), sock, stop)
    finally:
        loading.cancel()
        await grpc_server.stop(grace=2)
        if sock is not None:
            sock.close()
        server.close()


def run(
    server: InferenceServer, host: str, http_port: int, grpc_port: int, on_listening: Callable[[int, int], None]
) -> None:
    import uvloop

    uvloop.run(serve(server, host, http_port, grpc_port, on_listening))
