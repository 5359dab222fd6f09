"""The client of serve_latency.py, one process per connection: the same code for every server.

    python benchmarks/serve_peers/client.py SPEC_JSON

Connects, sends --warmup requests, prints `ready`, waits for `go DEADLINE` on standard input, then sends `requests`
sequential requests (or, when `requests` is 0, requests until DEADLINE, a time.time()), one different digits sample
each, and writes its latencies (ns), its counts of bad responses and wrong labels, and its time span to `result`.
REST: one keep-alive HTTP/1.1 connection on a raw socket, a JSON body. gRPC: one channel, a GRPCInferenceService
stub, the input in raw_input_contents.
"""

from __future__ import annotations

import gc
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "digits"
INFER_PATH = f"/v2/models/{MODEL}/infer"


class HttpConnection:
    """One keep-alive HTTP/1.1 connection on a raw socket: send prepared request bytes, read one response."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connect()

    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._more()
        lines = self.buffer[:end].split(b"\r\n")
        self.buffer = self.buffer[end + 4 :]
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            length = int(headers[b"content-length"])
            while len(self.buffer) < length:
                self._more()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = self._chunked()
        else:
            raise ConnectionError(f"a response without Content-Length or chunked encoding: {lines[0]!r}")
        if headers.get(b"connection", b"").lower() == b"close":
            self.sock.close()
            self.connect()
        return status, body

    def _chunked(self) -> bytes:
        body = b""
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                self._more()
            size = int(self.buffer[:end].split(b";")[0], 16)
            while len(self.buffer) < end + 2 + size + 2:
                self._more()
            body += self.buffer[end + 2 : end + 2 + size]
            self.buffer = self.buffer[end + 2 + size + 2 :]
            if size == 0:
                return body  # (no trailers expected)


class StdlibConnection:
    """The same exchange through the standard library's http.client (one keep-alive connection)."""

    def __init__(self, port: int) -> None:
        import http.client

        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        _, _, body = request.partition(b"\r\n\r\n")
        self.connection.request("POST", INFER_PATH, body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, response.read()


def rest_caller(port: int, x: np.ndarray, http_client: str = "socket") -> tuple[Any, Any]:
    connection = HttpConnection(port) if http_client == "socket" else StdlibConnection(port)
    prefix = f"POST {INFER_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    requests = []
    for row in x:
        body = json.dumps(
            {"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [float(v) for v in row]}]}
        ).encode()
        requests.append(f"{prefix}Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def call(i: int) -> Any:
        return connection.exchange(requests[i])

    def label(answer: Any) -> int:
        status, body = answer
        if status != 200:
            raise ValueError(f"HTTP {status}: {body[:200]!r}")
        outputs = json.loads(body)["outputs"]
        if not any(o["name"] == "probabilities" for o in outputs):
            raise ValueError("no 'probabilities' output in the response")
        data = next(o for o in outputs if o["name"] == "label")["data"]
        return int(np.asarray(data).reshape(-1)[0])

    return call, label


def grpc_caller(port: int, x: np.ndarray) -> tuple[Any, Any]:
    import grpc

    from gatewright.serve import inference_pb2, inference_pb2_grpc

    stub = inference_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    Tensor = inference_pb2.ModelInferRequest.InferInputTensor
    requests = [
        inference_pb2.ModelInferRequest(
            model_name=MODEL,
            inputs=[Tensor(name="X", datatype="FP32", shape=[1, 64])],
            raw_input_contents=[row.tobytes()],
        )
        for row in x[:, None, :]
    ]

    def call(i: int) -> Any:
        return stub.ModelInfer(requests[i], timeout=30)

    def label(response: Any) -> int:
        names = [o.name for o in response.outputs]
        if "probabilities" not in names:
            raise ValueError(f"no 'probabilities' output in the response: {names}")
        index = names.index("label")
        if response.raw_output_contents:
            return int(np.frombuffer(response.raw_output_contents[index], np.int64)[0])
        return int(response.outputs[index].contents.int64_contents[0])

    return call, label


def client_main(spec: dict[str, Any]) -> None:
    """Connect, warm up, say `ready`, wait for `go DEADLINE` on stdin, measure, write the result file."""
    result: dict[str, Any] = {"latencies_ns": [], "errors": 0, "first_error": None, "checked": 0, "wrong": 0}
    try:
        data = np.load(spec["data"])
        x, expected = data["x"], data["labels"]
        if spec["protocol"] == "rest":
            call, label = rest_caller(spec["port"], x, spec.get("http_client", "socket"))
        else:
            call, label = grpc_caller(spec["port"], x)
        n, offset, check = len(x), spec["offset"], spec["check_label"]
        for i in range(spec["warmup"]):
            label(call((offset + i) % n))
        print("ready", flush=True)
        deadline = float(sys.stdin.readline().split()[1])
        gc.collect()
        gc.disable()
        latencies = result["latencies_ns"]
        clock = time.perf_counter_ns
        result["start"] = time.time()
        i = offset
        while (len(latencies) < spec["requests"]) if spec["requests"] else (time.time() < deadline):
            sample = i % n
            i += 1
            begin = clock()
            answer = call(sample)
            latencies.append(clock() - begin)
            try:
                predicted = label(answer)
            except Exception as error:
                result["errors"] += 1
                result["first_error"] = result["first_error"] or repr(error)[:300]
                continue
            if check:
                result["checked"] += 1
                result["wrong"] += predicted != int(expected[sample])
        result["end"] = time.time()
    except Exception as error:
        result["fatal"] = repr(error)[:500]
    Path(spec["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    client_main(json.loads(sys.argv[1]))
