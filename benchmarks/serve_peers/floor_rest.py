"""The REST floor of serve_latency.py: a raw ASGI callable, no framework, that reads the request body and answers
every request with one fixed infer-response body (the file named by GW_BENCH_FLOOR_RESPONSE).

    python -m uvicorn floor_rest:app --app-dir benchmarks/serve_peers --loop uvloop --http httptools
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BODY = Path(os.environ["GW_BENCH_FLOOR_RESPONSE"]).read_bytes()
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
}
RESPONSE = {"type": "http.response.body", "body": BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole request body, as any real server must
        message = await receive()
        more = message.get("more_body", False)
    await send(START)
    await send(RESPONSE)
