"""Run the server: REST (uvicorn, uvloop, httptools) and gRPC (grpc.aio) in one event loop."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import grpc
import uvicorn

from gatewright.errors import GatewrightError
from gatewright.serve import grpc as grpc_front
from gatewright.serve.http import HttpApp
from gatewright.serve.server import InferenceServer

log = logging.getLogger("gatewright.serve")


async def serve(
    server: InferenceServer,
    host: str = "0.0.0.0",
    http_port: int = 8080,
    grpc_port: int = 8081,
    on_listening: Callable[[int, int], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; models load in the background (the server is live at once,
    ready once they are loaded). ``on_listening`` gets the bound ports (port 0 picks a free one)."""
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
    config = uvicorn.Config(
        HttpApp(server),
        host=host,
        port=http_port,
        loop="none",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
    )
    http_server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    loading = asyncio.create_task(server.start())
    try:
        try:
            sock.bind((host, http_port))
        except OSError as exc:
            raise GatewrightError(f"cannot listen for HTTP on {host}:{http_port}: {exc.strerror}") from None
        if on_listening:
            on_listening(sock.getsockname()[1], bound_grpc)
        await http_server.serve(sockets=[sock])
    finally:
        loading.cancel()
        await grpc_server.stop(grace=2)
        sock.close()
        server.close()


def run(
    server: InferenceServer, host: str, http_port: int, grpc_port: int, on_listening: Callable[[int, int], None]
) -> None:
    import uvloop

    uvloop.run(serve(server, host, http_port, grpc_port, on_listening))
