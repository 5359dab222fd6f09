"""The "floor + model" row of serve_latency.py over REST: the floor's raw ASGI callable, but it decodes the JSON
request, runs the digits model on onnxruntime (one intra-op thread, as gatewright's cpu device) and answers its
outputs as JSON, with nothing else: no routing, checks, batching or statistics. It is what any Python server that
runs this model must at least spend on this machine, so it shows how much of the distance to the floor is the
model and JSON itself and how much is the server's own.

    GW_BENCH_MODEL=model.onnx python -m uvicorn floor_model_rest:app --app-dir benchmarks/serve_peers \\
        --loop uvloop --http httptools
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

OPTIONS = ort.SessionOptions()
OPTIONS.intra_op_num_threads = 1
SESSION = ort.InferenceSession(os.environ["GW_BENCH_MODEL"], OPTIONS, providers=["CPUExecutionProvider"])
OUTPUTS = [o.name for o in SESSION.get_outputs()]  # label INT64 [N], probabilities FP32 [N, 10]
DATATYPES = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":  # the readiness probe
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    tensor = orjson.loads(b"".join(chunks))["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    results = SESSION.run(OUTPUTS, {tensor["name"]: x})
    outputs = [
        {"name": name, "datatype": DATATYPES[value.dtype], "shape": list(value.shape), "data": value.ravel()}
        for name, value in zip(OUTPUTS, results, strict=True)
    ]
    body = orjson.dumps({"model_name": "digits", "model_version": "1", "outputs": outputs},
                        option=orjson.OPT_SERIALIZE_NUMPY)  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
