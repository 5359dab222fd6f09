"""A model repository and a running ``gatewright serve`` (a real process on free ports) for the
server's tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from gatewright.build.pipeline import build
from tests import onnx_models as om

GATEWRIGHT = [sys.executable, "-m", "gatewright.cli"]


@dataclass
class Repo:
    path: Path
    x: np.ndarray  # digits samples (float32, 64 features)
    y: np.ndarray
    digits_v1: bytes
    digits_v2: bytes


def string_echo_model() -> bytes:
    """Identity on a string tensor [N, 2]: BYTES end to end."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])],
        "echo",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N", 2])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["N", 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def typed_model() -> bytes:
    """int32 + int32 and a bool NOT, with a fixed (unbatched) shape [3]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Not", ["flag"], ["negated"])],
        "typed",
        [
            helper.make_tensor_value_info("a", TensorProto.INT32, [3]),
            helper.make_tensor_value_info("b", TensorProto.INT32, [3]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, [3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.INT32, [3]),
            helper.make_tensor_value_info("negated", TensorProto.BOOL, [3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """digits (versions 1 and 2, all served), mlp_bundle (a firmware bundle on emu), echo (strings),
    typed (INT32 and BOOL, no batch dimension) and zipmap (a non-tensor output)."""
    root = tmp_path_factory.mktemp("repository")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v1, x, y = om.sklearn_mlp(zipmap=False, seed=0)
        v2, _, _ = om.sklearn_mlp(zipmap=False, seed=1)
        zipped, _, _ = om.sklearn_mlp(zipmap=True, seed=0)
    for version, data in ((1, v1), (2, v2)):
        (root / "digits" / str(version)).mkdir(parents=True)
        (root / "digits" / str(version) / "model.onnx").write_bytes(data)
    (root / "digits" / "config.pbtxt").write_text(
        "version_policy: { all { } }\nmax_batch_size: 32\ndynamic_batching { max_queue_delay_microseconds: 0 }\n"
    )
    (root / "echo").mkdir()
    (root / "echo" / "model.onnx").write_bytes(string_echo_model())
    (root / "typed").mkdir()
    (root / "typed" / "model.onnx").write_bytes(typed_model())
    (root / "zipmap").mkdir()
    (root / "zipmap" / "model.onnx").write_bytes(zipped)
    work = tmp_path_factory.mktemp("bundle")
    (work / "m.onnx").write_bytes(om.pytorch_mlp([6, 12, 4], seed=3))
    np.save(work / "calib.npy", om.rng(1).normal(size=(200, 6)).astype(np.float32))
    (root / "mlp_bundle").mkdir()
    build(work / "m.onnx", root / "mlp_bundle" / "1", until="quantize", calibration=work / "calib.npy")
    return Repo(root, x, y, v1, v2)


@dataclass
class Server:
    process: subprocess.Popen[str]
    http_port: int
    grpc_port: int
    log: Path

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def base(self) -> str:
        return f"http://{self.http}"


def call(server: Server, path: str, body: Any = None) -> tuple[int, Any]:
    """GET ``path`` (or POST ``body`` as JSON); the status and the decoded JSON answer (None if empty)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.base + path, data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def start_server(
    args: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 60.0, ready: bool = True
) -> Server:
    """Start ``gatewright serve ARGS`` on free ports and wait until it reports ready (or, with
    ``ready=False``, until it is live and has tried to load every model)."""
    out = log.open("w")
    process = subprocess.Popen(
        [*GATEWRIGHT, "serve", "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=out,
        text=True,
        env={**os.environ, **(env or {}), "COLUMNS": "400"},
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"REST on http://[^:]+:(\d+), gRPC on [^:]+:(\d+)", line)
    if not match:
        process.kill()
        raise AssertionError(f"the server did not start: {line!r}\n{log.read_text()}")
    server = Server(process, int(match.group(1)), int(match.group(2)), log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.base}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except urllib.error.HTTPError as exc:
            if not ready and exc.code == 400 and _loading_done(server):
                return server
        except OSError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    stop_server(server)
    raise AssertionError(f"the server was not ready within {timeout} s:\n{log.read_text()}")


def _loading_done(server: Server) -> bool:
    request = urllib.request.Request(f"{server.base}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=2) as answer:
        return "LOADING" not in answer.read().decode()


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture(scope="session")
def server(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``gatewright serve --model-repository`` on the repository above, shared by the session."""
    running = start_server(["--model-repository", str(repo.path)], tmp_path_factory.mktemp("log") / "serve.log")
    yield running
    stop_server(running)
