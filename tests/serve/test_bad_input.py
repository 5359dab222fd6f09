"""Bad requests, over raw HTTP and gRPC: each gets its exact status (or gRPC code) and an error that names
the problem, and the server goes on serving right answers afterwards.

Over HTTP every error body is ``{"error": "..."}``: 400 a malformed request or one that does not fit the
model, 404 no such model, version or path, 405 a method the path does not take, 413 a body past
``--max-request-bytes``. Over gRPC the same mistakes are INVALID_ARGUMENT, NOT_FOUND and
RESOURCE_EXHAUSTED. Requests that change the server's settings run on a server of their own.
"""

from __future__ import annotations

import base64
import functools
import gzip
import http.client
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from gatewright.serve import inference_pb2 as pb
from gatewright.serve import inference_pb2_grpc as pb_grpc
from tests.serve.conftest import Repo, Server, start_server, stop_server

LIMIT = 4096  # --max-request-bytes of the small server

Answer = tuple[int, dict[str, str], bytes]


# -- helpers -------------------------------------------------------------------------------------------------
def send(
    server: Server, method: str, path: str, body: bytes | dict[str, Any] | list[Any] | None = None, **headers: str
) -> Answer:
    """One request over a fresh connection; ``headers`` with '_' for '-' (Content_Encoding)."""
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
    connection = http.client.HTTPConnection(server.http, timeout=30)
    try:
        connection.request(method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def error_of(answer: Answer, status: int, *words: str) -> str:
    """The answer is ``status`` with a body {"error": "..."} whose message holds every one of ``words``."""
    code, headers, body = answer
    assert code == status, (code, body[:500])
    assert headers.get("content-type") == "application/json"
    document = json.loads(body)
    assert isinstance(document, dict) and list(document) == ["error"] and isinstance(document["error"], str)
    for word in words:
        assert word in document["error"], (word, document["error"])
    return document["error"]


def x_input(x: np.ndarray, **changes: Any) -> dict[str, Any]:
    return {"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist(), **changes}


def typed_inputs(flag: list[bool] | None = None) -> list[dict[str, Any]]:
    return [
        {"name": "a", "shape": [3], "datatype": "INT32", "data": [1, 2, 3]},
        {"name": "b", "shape": [3], "datatype": "INT32", "data": [10, 20, 30]},
        {"name": "flag", "shape": [3], "datatype": "BOOL", "data": flag or [True, False, True]},
    ]


@functools.cache
def _session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def expected_labels(repo: Repo, x: np.ndarray) -> list[int]:
    """What onnxruntime says digits (version 2, the latest) answers: never taken from the server."""
    return [int(v) for v in _session(repo.digits_v2).run(["label"], {"X": x})[0]]


def assert_healthy(server: Server, repo: Repo, samples: int = 4) -> None:
    """Ready, and digits still infers what onnxruntime says, over HTTP and gRPC."""
    assert server.process.poll() is None, Path(server.log).read_text()[-4000:]
    status, _, body = send(server, "GET", "/v2/health/ready")
    assert (status, json.loads(body)) == (200, {"ready": True})
    x = repo.x[:samples]
    status, _, body = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(x)]})
    assert status == 200, body
    labels = {o["name"]: o for o in json.loads(body)["outputs"]}["label"]["data"]
    assert labels == expected_labels(repo, x)
    with grpc.insecure_channel(server.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
        answer = stub.ModelInfer(digits_grpc(x), timeout=30)
    label = np.frombuffer(answer.raw_output_contents[[o.name for o in answer.outputs].index("label")], "<i8")
    assert label.tolist() == expected_labels(repo, x)


@pytest.fixture(autouse=True)
def _servers_stay_healthy(request: pytest.FixtureRequest, server: Server, repo: Repo) -> Iterator[None]:
    """After each test: the shared server (and the small one, where the test used it) is ready and right."""
    yield
    assert_healthy(server, repo)
    if "small" in request.fixturenames:
        assert_healthy(request.getfixturevalue("small"), repo, samples=2)  # 4096 bytes take two samples


@pytest.fixture(scope="module")
def small(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of these tests' own: --max-request-bytes 4096, and free to change its settings."""
    running = start_server(
        ["--model-repository", str(repo.path), "--max-request-bytes", str(LIMIT)],
        tmp_path_factory.mktemp("small") / "serve.log",
    )
    yield running
    stop_server(running)


# -- the body -------------------------------------------------------------------------------------------------
def test_malformed_json(server: Server) -> None:
    answer = send(server, "POST", "/v2/models/digits/infer", b'{"inputs": [{"name": "X", ')
    error_of(answer, 400, "not valid JSON")
    error_of(send(server, "POST", "/v2/logging", b"{nope}"), 400, "not valid JSON")
    error_of(send(server, "POST", "/v2/repository/index", b"\xff\xfe"), 400, "not valid JSON")


def test_a_body_that_is_not_an_object(server: Server) -> None:
    error_of(send(server, "POST", "/v2/models/digits/infer", [1, 2]), 400, "must be a JSON object")
    error_of(send(server, "POST", "/v2/models/digits/infer", b'"inputs"'), 400, "must be a JSON object")
    error_of(send(server, "POST", "/v2/repository/index", b"[]"), 400, "must be a JSON object")
    error_of(send(server, "POST", "/v2/systemsharedmemory/region/r/register", b"7"), 400, "must be a JSON object")


def test_missing_inputs(server: Server, repo: Repo) -> None:
    error_of(send(server, "POST", "/v2/models/digits/infer", {}), 400, "'inputs'")
    error_of(send(server, "POST", "/v2/models/digits/infer", {"inputs": []}), 400, "'inputs'")
    error_of(send(server, "POST", "/v2/models/digits/infer", {"inputs": {"X": 1}}), 400, "'inputs'")
    # the model has three inputs; two are given
    answer = send(server, "POST", "/v2/models/typed/infer", {"inputs": typed_inputs()[:2]})
    error_of(answer, 400, "missing input(s) flag")
    answer = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(repo.x[:1], name="Y")]})
    error_of(answer, 400, "missing input(s) X", "unknown input(s) Y")
    answer = send(
        server, "POST", "/v2/models/digits/infer", {"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32"}]}
    )
    error_of(answer, 400, "input 'X' has no 'data'")


def test_wrong_shape(server: Server, repo: Repo) -> None:
    x = repo.x[:1, :63]
    answer = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(x)]})
    error_of(answer, 400, "input 'X' has shape [1, 63]", "[-1, 64]")
    answer = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(repo.x[:1], shape=[64])]})
    error_of(answer, 400, "input 'X' has shape [64]")
    answer = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(repo.x[:1], shape=[1, -64])]})
    error_of(answer, 400, "tensor 'X'", "negative dimension")
    answer = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(repo.x[:1], shape="1x64")]})
    error_of(answer, 400, "tensor 'X'", "'shape' must be a list of integers")
    answer = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(repo.x[:40])]})
    error_of(answer, 400, "input 'X' holds a batch of 40", "max_batch_size")


def test_more_dimensions_than_numpy_holds(server: Server) -> None:
    """65 dimensions of 1: numpy cannot reshape to that; the answer is a 400 naming the tensor, not a 500."""
    tensor = {"name": "a", "shape": [1] * 65, "datatype": "INT32", "data": [1]}
    error_of(send(server, "POST", "/v2/models/typed/infer", {"inputs": [tensor]}), 400, "tensor 'a'")


def test_wrong_datatype(server: Server, repo: Repo) -> None:
    x = repo.x[:1]
    answer = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(x, datatype="FP64")]})
    error_of(answer, 400, "input 'X' is FP64; the model expects FP32")
    inputs = typed_inputs()
    inputs[2] = {"name": "flag", "shape": [3], "datatype": "BOOL", "data": [1, 0, 1]}
    error_of(send(server, "POST", "/v2/models/typed/infer", {"inputs": inputs}), 400, "tensor 'flag'", "true or false")
    inputs = typed_inputs()
    inputs[0]["data"] = [1, 2, 2**40]
    error_of(send(server, "POST", "/v2/models/typed/infer", {"inputs": inputs}), 400, "tensor 'a'", "INT32")


@pytest.mark.parametrize(
    ("model", "tensor", "words"),
    [
        ("digits", {"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 63 + [None]}, "FP32 data"),
        ("digits", {"name": "X", "shape": [1, 64], "datatype": "FP32", "data": ["1.5"] * 64}, "FP32 data"),
        ("digits", {"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [True] * 64}, "FP32 data"),
        ("typed", {"name": "a", "shape": [3], "datatype": "INT32", "data": [1.9, 2, 3]}, "INT32 data"),
        ("typed", {"name": "a", "shape": [3], "datatype": "INT32", "data": [True, False, True]}, "INT32 data"),
    ],
)
def test_data_of_another_json_type(server: Server, model: str, tensor: dict[str, Any], words: str) -> None:
    """Not cast by numpy without a word: null is not NaN, "1.5" not 1.5, 1.9 not the INT32 1, true not 1."""
    inputs = [tensor] if model == "digits" else [tensor, *typed_inputs()[1:]]
    error_of(
        send(server, "POST", f"/v2/models/{model}/infer", {"inputs": inputs}), 400, f"tensor '{tensor['name']}'", words
    )


def test_unknown_datatype(server: Server, repo: Repo) -> None:
    answer = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(repo.x[:1], datatype="FLOAT")]})
    error_of(answer, 400, "tensor 'X': unknown datatype 'FLOAT'", "FP32")
    answer = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(repo.x[:1], datatype=None)]})
    error_of(answer, 400, "tensor 'X': unknown datatype None")
    for datatype in ({}, ["FP32"]):  # not even hashable: a 400 too, not a TypeError as a 500
        answer = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(repo.x[:1], datatype=datatype)]})
        error_of(answer, 400, "tensor 'X': unknown datatype")


def test_data_count_not_matching_the_shape(server: Server, repo: Repo) -> None:
    answer = send(server, "POST", "/v2/models/digits/infer", {"inputs": [x_input(repo.x[:1], data=[0.5] * 10)]})
    error_of(answer, 400, "tensor 'X': 10 elements given, shape [1, 64] holds 64")
    ragged = x_input(repo.x[:1], data=[[1.0, 2.0], [3.0]])
    error_of(send(server, "POST", "/v2/models/digits/infer", {"inputs": [ragged]}), 400, "tensor 'X'", "row-major")
    text = {"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": ["one"]}
    error_of(send(server, "POST", "/v2/models/echo/infer", {"inputs": [text]}), 400, "tensor 'text': 1 elements given")


# -- the binary tensor extension -------------------------------------------------------------------------------
def binary_request(x: np.ndarray, declared_size: int, extra: bytes = b"") -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": declared_size},
                }
            ]
        }
    ).encode()
    return header + x.astype("<f4").tobytes() + extra, len(header)


def test_binary_data_size_past_the_body(server: Server, repo: Repo) -> None:
    x = repo.x[:1]
    body, length = binary_request(x, declared_size=x.nbytes + 64)
    answer = send(server, "POST", "/v2/models/digits/infer", body, Inference_Header_Content_Length=str(length))
    error_of(answer, 400, "input 'X': binary_data_size 320 runs past the binary data")
    body, length = binary_request(x, declared_size=x.nbytes, extra=b"\0" * 8)
    answer = send(server, "POST", "/v2/models/digits/infer", body, Inference_Header_Content_Length=str(length))
    error_of(answer, 400, "8 bytes of binary data that no input claims")
    body, length = binary_request(x, declared_size=-4)
    answer = send(server, "POST", "/v2/models/digits/infer", body, Inference_Header_Content_Length=str(length))
    error_of(answer, 400, "input 'X': binary_data_size -4")
    body, length = binary_request(x, declared_size=x.nbytes)  # the right request is answered
    answer = send(server, "POST", "/v2/models/digits/infer", body, Inference_Header_Content_Length=str(length))
    assert answer[0] == 200, answer[2]


@pytest.mark.parametrize("value", ["abc", "-5", "1e3", "99999", "²"])
def test_bad_inference_header_content_length(server: Server, repo: Repo, value: str) -> None:
    """Not a length within the body: 400 naming the header (a superscript two is a digit to str.isdigit)."""
    body, _ = binary_request(repo.x[:1], declared_size=256)
    answer = send(server, "POST", "/v2/models/digits/infer", body, Inference_Header_Content_Length=value)
    error_of(answer, 400, "Inference-Header-Content-Length")


# -- models, versions, outputs ---------------------------------------------------------------------------------
def test_unknown_model(server: Server, repo: Repo) -> None:
    for method, path, body in [
        ("POST", "/v2/models/nosuch/infer", {"inputs": [x_input(repo.x[:1])]}),
        ("GET", "/v2/models/nosuch", None),
        ("GET", "/v2/models/nosuch/ready", None),
        ("GET", "/v2/models/nosuch/config", None),
        ("GET", "/v2/models/nosuch/stats", None),
        ("GET", "/v2/models/nosuch/trace/setting", None),
        ("POST", "/v2/repository/models/nosuch/unload", None),
        ("GET", "/v1/models/nosuch", None),
        ("POST", "/v1/models/nosuch:predict", {"instances": [[1.0]]}),
    ]:
        error_of(send(server, method, path, body), 404, "unknown model 'nosuch'", "digits")
    answer = send(server, "POST", "/v2/repository/models/nosuch/load")
    error_of(answer, 404, "no model 'nosuch' in the model repository")


def test_unknown_version(server: Server, repo: Repo) -> None:
    answer = send(server, "POST", "/v2/models/digits/versions/9/infer", {"inputs": [x_input(repo.x[:1])]})
    error_of(answer, 404, "model 'digits' has no version 9")
    for suffix in ("", "/ready", "/config", "/stats"):
        error_of(send(server, "GET", f"/v2/models/digits/versions/9{suffix}"), 404, "no version 9")


@pytest.mark.parametrize("version", ["abc", "1.5", "-1", "%C2%B2"])
def test_non_numeric_version(server: Server, repo: Repo, version: str) -> None:
    """400 naming the version; '²' (%C2%B2) is a digit to str.isdigit but not to int()."""
    answer = send(server, "POST", f"/v2/models/digits/versions/{version}/infer", {"inputs": [x_input(repo.x[:1])]})
    error_of(answer, 400, "model 'digits'", "is not a number")
    for suffix in ("", "/config", "/stats"):
        error_of(send(server, "GET", f"/v2/models/digits/versions/{version}{suffix}"), 400, "is not a number")
    error_of(send(server, "GET", f"/v2/models/digits/versions/{version}/ready"), 400, "is not a number")


def test_unknown_output_name(server: Server, repo: Repo) -> None:
    request = {"inputs": [x_input(repo.x[:1])], "outputs": [{"name": "label"}, {"name": "logits"}]}
    error_of(send(server, "POST", "/v2/models/digits/infer", request), 400, "no output 'logits'", "label")
    request = {"inputs": [x_input(repo.x[:1])], "outputs": [{"parameters": {"binary_data": True}}]}
    error_of(send(server, "POST", "/v2/models/digits/infer", request), 400, "needs a 'name'")
    request = {"inputs": [x_input(repo.x[:1])], "outputs": [{"name": "label", "parameters": {"classification": -2}}]}
    error_of(send(server, "POST", "/v2/models/digits/infer", request), 400, "output 'label'", "classification")


def test_classification_of_a_bool_output(server: Server) -> None:
    """Triton's classification on a BOOL output ranks false < true; numpy cannot negate booleans."""
    top = {"name": "negated", "parameters": {"classification": 1}}
    request = {"inputs": typed_inputs([True, False, True]), "outputs": [top]}
    status, _, body = send(server, "POST", "/v2/models/typed/infer", request)
    assert status == 200, body
    (output,) = json.loads(body)["outputs"]
    assert output["datatype"] == "BYTES" and output["data"][0].endswith(":1")  # negated = [false, true, false]


def test_classification_of_an_unsigned_output(small: Server) -> None:
    """-x wraps around for unsigned integers: a UINT8 0 must not rank above 5 (a model uploaded for it)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "uint8_identity",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [3])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()
    files = {"config": "{}", "file:1/model.onnx": base64.b64encode(model).decode()}
    assert send(small, "POST", "/v2/repository/models/uint8_identity/load", {"parameters": files})[0] == 200
    try:
        request = {
            "inputs": [{"name": "x", "shape": [3], "datatype": "UINT8", "data": [0, 5, 3]}],
            "outputs": [{"name": "y", "parameters": {"classification": 2}}],
        }
        status, _, body = send(small, "POST", "/v2/models/uint8_identity/infer", request)
        assert status == 200, body
        assert json.loads(body)["outputs"][0]["data"] == ["5.000000:1", "3.000000:2"]
    finally:
        assert send(small, "POST", "/v2/repository/models/uint8_identity/unload")[0] == 200


def test_bad_parameters(server: Server, repo: Repo) -> None:
    request = {"inputs": [x_input(repo.x[:1])], "parameters": ["binary_data_output"]}
    error_of(send(server, "POST", "/v2/models/digits/infer", request), 400, "'parameters' must be an object")
    request = {"inputs": [x_input(repo.x[:1])], "id": 7}
    error_of(send(server, "POST", "/v2/models/digits/infer", request), 400, "'id' must be a string")
    request = {"inputs": [x_input(repo.x[:1], parameters={"shared_memory_region": "nowhere"})]}
    error_of(send(server, "POST", "/v2/models/digits/infer", request), 400, "input 'X'", "shared_memory_byte_size")
    shm = {"shared_memory_region": "nowhere", "shared_memory_byte_size": 256}
    request = {"inputs": [x_input(repo.x[:1], parameters=shm)]}
    error_of(send(server, "POST", "/v2/models/digits/infer", request), 404, "no shared memory region 'nowhere'")


# -- methods and paths -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v2/models/digits/infer", {"POST"}),
        ("PUT", "/v2/models/digits/versions/1/infer", {"POST"}),
        ("POST", "/v2/health/live", {"GET"}),
        ("DELETE", "/v2/models/digits", {"GET"}),
        ("GET", "/v2/repository/index", {"POST"}),
        ("GET", "/v2/repository/models/digits/load", {"POST"}),
        ("POST", "/v2/systemsharedmemory/status", {"GET"}),
        ("GET", "/v1/models/digits:predict", {"POST"}),
        ("POST", "/metrics", {"GET"}),
        ("PUT", "/v2/logging", {"GET", "POST"}),
        ("DELETE", "/v2/trace/setting", {"GET", "POST"}),
        ("PATCH", "/v2/models/digits/trace/setting", {"GET", "POST"}),
    ],
)
def test_wrong_method(server: Server, method: str, path: str, allowed: set[str]) -> None:
    answer = send(server, method, path)
    error_of(answer, 405, path, method)
    assert {m.strip() for m in answer[1]["allow"].split(",")} == allowed


@pytest.mark.parametrize(
    "path", ["/v3/models/digits", "/v2/models", "/v2/models/digits/predict", "/v2/health", "/v1/models/a:b:predict"]
)
def test_unknown_path(server: Server, path: str) -> None:
    error_of(send(server, "GET", path), 404, "no endpoint", "/v2")


# -- size and encoding -----------------------------------------------------------------------------------------
def test_a_declared_content_length_over_the_limit(small: Server) -> None:
    """Refused from the header alone: the body is never sent."""
    connection = http.client.HTTPConnection(small.http, timeout=30)
    try:
        connection.putrequest("POST", "/v2/models/digits/infer")
        connection.putheader("Content-Length", str(10**9))
        connection.putheader("Content-Type", "application/json")
        connection.endheaders()
        response = connection.getresponse()
        answer = (response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()
    error_of(answer, 413, "1000000000 bytes", f"at most {LIMIT}")


def test_a_body_over_the_limit(small: Server) -> None:
    """Sent in chunks with no Content-Length: refused once the body passes the limit."""
    chunks = [b'{"inputs": [' + b" " * 2000] + [b" " * 2000] * 3 + [b"]}"]
    connection = http.client.HTTPConnection(small.http, timeout=30)
    try:
        connection.request("POST", "/v2/models/digits/infer", body=iter(chunks), encode_chunked=True)
        response = connection.getresponse()
        answer = (response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()
    error_of(answer, 413, f"exceeds {LIMIT} bytes")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_body_that_inflates_past_the_limit(small: Server, repo: Repo, encoding: str) -> None:
    body = json.dumps({"inputs": [x_input(repo.x[:1], data=[0.0] * 20000)]}).encode()
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    assert len(packed) < LIMIT < len(body)
    answer = send(small, "POST", "/v2/models/digits/infer", packed, Content_Encoding=encoding)
    error_of(answer, 413, f"inflates past {LIMIT} bytes")
    small_body = json.dumps({"inputs": [x_input(repo.x[:1])]}).encode()  # under the limit once inflated: answered
    answer = send(small, "POST", "/v2/models/digits/infer", gzip.compress(small_body), Content_Encoding="gzip")
    assert answer[0] == 200, answer[2]


def test_bad_gzip_data(server: Server) -> None:
    answer = send(server, "POST", "/v2/models/digits/infer", b"this is not gzip", Content_Encoding="gzip")
    error_of(answer, 400, "not valid gzip data")
    answer = send(server, "POST", "/v2/models/digits/infer", b"\x78\x9c garbage", Content_Encoding="deflate")
    error_of(answer, 400, "not valid deflate data")
    answer = send(server, "POST", "/v2/models/digits/infer", gzip.compress(b"{}"), Content_Encoding="br")
    error_of(answer, 400, "Content-Encoding 'br' is not supported")
    truncated = gzip.compress(b'{"ready": true}')[:-4]  # the gzip trailer (its length field) is cut off
    error_of(send(server, "POST", "/v2/repository/index", truncated, Content_Encoding="gzip"), 400, "gzip")


# -- KServe v1 -------------------------------------------------------------------------------------------------
def test_v1_predict_with_bad_instances(server: Server) -> None:
    error_of(send(server, "POST", "/v1/models/digits:predict", {}), 400, "v1 predict", "'instances'")
    error_of(send(server, "POST", "/v1/models/digits:predict", {"instances": []}), 400, "'instances'")
    error_of(send(server, "POST", "/v1/models/digits:predict", {"instances": {"X": 1}}), 400, "'instances'")
    error_of(send(server, "POST", "/v1/models/digits:predict", [[1.0]]), 400, "must be a JSON object")
    ragged = {"instances": [[1.0] * 64, [1.0] * 3]}
    error_of(send(server, "POST", "/v1/models/digits:predict", ragged), 400, "do not form arrays")
    words = {"instances": [["a"] * 64]}
    error_of(send(server, "POST", "/v1/models/digits:predict", words), 400, "do not form arrays")
    short = {"instances": [[1.0] * 63]}
    error_of(send(server, "POST", "/v1/models/digits:predict", short), 400, "input 'X' has shape [1, 63]")
    plain = {"instances": [1, 2, 3]}
    error_of(send(server, "POST", "/v1/models/typed:predict", plain), 400, "the model has inputs a, b, flag")
    missing = {"instances": [{"a": 1, "b": 2}] * 3}  # no flag: not False, and not left to numpy's casting
    error_of(send(server, "POST", "/v1/models/typed:predict", missing), 400, "flag")


def test_v1_predict_with_an_integer_out_of_range(server: Server) -> None:
    """2**40 does not fit the INT32 input: a 400, not numpy's OverflowError as a 500."""
    rows = [{"a": 2**40, "b": 1, "flag": True}, {"a": 1, "b": 1, "flag": False}, {"a": 1, "b": 1, "flag": True}]
    error_of(send(server, "POST", "/v1/models/typed:predict", {"instances": rows}), 400, "v1 predict")


# -- repository, shared memory, settings -----------------------------------------------------------------------
def test_bad_load_requests(small: Server) -> None:
    load = "/v2/repository/models/echo/load"
    error_of(send(small, "POST", load, {"parameters": "config"}), 400, "'parameters' must be an object")
    error_of(send(small, "POST", load, {"parameters": {"config": {"max_batch_size": 2}}}), 400, "JSON string")
    error_of(send(small, "POST", load, {"parameters": {"config": "{nope"}}), 400, "'config' parameter is not")
    error_of(send(small, "POST", load, {"parameters": {"file:1/model.onnx": "AAAA"}}), 400, "'config' parameter too")
    error_of(send(small, "POST", load, {"parameters": {"config": "{}", "file:1/model.onnx": 7}}), 400, "base64")


@pytest.mark.parametrize("config", ["1", "null", "[1, 2]", '"text"'])
def test_load_with_a_config_that_is_not_an_object(small: Server, config: str) -> None:
    answer = send(small, "POST", "/v2/repository/models/echo/load", {"parameters": {"config": config}})
    error_of(answer, 400, "model 'echo'", "'config' parameter is not a valid model configuration")


def test_load_with_files_under_a_name_no_folder_can_have(small: Server) -> None:
    """The name becomes part of the upload's folder name: a NUL byte (%00) or 300 letters get a 400."""
    body = {"parameters": {"config": "{}", "file:1/model.onnx": base64.b64encode(b"onnx").decode()}}
    error_of(send(small, "POST", "/v2/repository/models/bad%00name/load", body), 400, "model name")
    error_of(send(small, "POST", f"/v2/repository/models/{'a' * 300}/load", body), 400, "model name")
    # a file parameter naming the model's folder itself
    body = {"parameters": {"config": "{}", "file:.": base64.b64encode(b"onnx").decode()}}
    error_of(send(small, "POST", "/v2/repository/models/dotted/load", body), 400, "model 'dotted'")


def test_a_failed_upload_leaves_the_repositorys_model_loadable(small: Server) -> None:
    """Files that hold no model are refused, and a plain load still loads the model from the repository."""
    junk = {"parameters": {"config": "{}", "file:notes.txt": base64.b64encode(b"no model here").decode()}}
    error_of(send(small, "POST", "/v2/repository/models/echo/load", junk), 404, "model 'echo'", "holds no model")
    status, _, body = send(small, "POST", "/v2/repository/models/echo/load")
    assert (status, body) == (200, b"{}")
    text = {"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}
    status, _, body = send(small, "POST", "/v2/models/echo/infer", {"inputs": [text]})
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == ["a", "b"]


def test_bad_shared_memory_requests(server: Server) -> None:
    register = "/v2/systemsharedmemory/region/fuzzed/register"
    error_of(send(server, "POST", register, {"key": "/gw-nosuch-key", "byte_size": 16}), 404, "'/gw-nosuch-key'")
    error_of(send(server, "POST", register, {"key": "/a/b", "byte_size": 16}), 400, "POSIX shared-memory name")
    error_of(send(server, "POST", register, {"key": "/x", "byte_size": "16"}), 400, "'byte_size'")
    error_of(send(server, "POST", register, {"key": "/gw\u0000key", "byte_size": 16}), 400, "shared memory key")
    answer = send(server, "GET", "/v2/systemsharedmemory/region/fuzzed/status")
    error_of(answer, 404, "no shared memory region 'fuzzed'")
    error_of(send(server, "POST", "/v2/systemsharedmemory/region/fuzzed/unregister"), 404, "'fuzzed'")
    answer = send(server, "POST", "/v2/cudasharedmemory/region/gpu/register", {"raw_handle": {"b64": "AA=="}})
    error_of(answer, 400, "CUDA shared memory is not supported")


def test_bad_log_settings(small: Server, tmp_path: Path) -> None:
    """A bad value is refused and changes nothing: the settings can still be changed afterwards."""
    error_of(send(small, "POST", "/v2/logging", {"log_verbosity": 1}), 400, "'log_verbosity' is unknown")
    error_of(send(small, "POST", "/v2/logging", {"log_verbose_level": -1}), 400, "'log_verbose_level'")
    error_of(send(small, "POST", "/v2/logging", {"log_info": "yes"}), 400, "'log_info' takes true or false")
    error_of(send(small, "POST", "/v2/logging", {"log_format": "fancy"}), 400, "'log_format'")
    for log_file in (5, {}, True):
        error_of(send(small, "POST", "/v2/logging", {"log_file": log_file}), 400, "'log_file'")
    for log_file in (str(tmp_path / "no" / "such" / "folder.log"), str(tmp_path)):
        error_of(send(small, "POST", "/v2/logging", {"log_file": log_file}), 400, "'log_file'")
    status, _, body = send(small, "POST", "/v2/logging", {"log_file": str(tmp_path / "serve.log"), "log_info": True})
    assert status == 200 and json.loads(body)["log_file"] == str(tmp_path / "serve.log"), body
    status, _, body = send(small, "POST", "/v2/logging", {"log_file": ""})
    assert status == 200 and json.loads(body)["log_file"] == "", body


def test_bad_trace_settings(small: Server, tmp_path: Path) -> None:
    reset = dict.fromkeys(("trace_file", "trace_level", "trace_rate", "trace_count", "log_frequency", "trace_mode"))
    try:
        error_of(send(small, "POST", "/v2/trace/setting", {"trace_level": ["LOUD"]}), 400, "'trace_level'")
        error_of(send(small, "POST", "/v2/trace/setting", {"trace_rate": "often"}), 400, "'trace_rate'")
        error_of(send(small, "POST", "/v2/trace/setting", {"trace_speed": "1"}), 400, "'trace_speed' is unknown")
        error_of(send(small, "POST", "/v2/models/nosuch/trace/setting", {"trace_rate": "1"}), 404, "unknown model")
        # '²' is a digit to str.isdigit, not to int(): taken, it fails every traced request later
        error_of(send(small, "POST", "/v2/trace/setting", {"trace_rate": "²"}), 400, "'trace_rate'")
        # any JSON value was taken in its Python form ("{}" as the trace mode)
        error_of(send(small, "POST", "/v2/trace/setting", {"trace_mode": [{}]}), 400, "'trace_mode'")
        # a trace file that cannot be written does not fail the requests it traces
        update = {"trace_file": str(tmp_path / "no" / "such.jsonl"), "trace_level": ["TIMESTAMPS"], "trace_rate": "1"}
        assert send(small, "POST", "/v2/trace/setting", update)[0] == 200
        status, _, body = send(small, "POST", "/v2/models/typed/infer", {"inputs": typed_inputs()})
        assert status == 200, body
    finally:
        assert send(small, "POST", "/v2/trace/setting", reset)[0] == 200


# -- gRPC ------------------------------------------------------------------------------------------------------
def digits_grpc(x: np.ndarray, **changes: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name=changes.pop("model_name", "digits"), model_version=changes.pop("version", "")
    )
    tensor = request.inputs.add(name=changes.pop("name", "X"), datatype=changes.pop("datatype", "FP32"))
    tensor.shape.extend(changes.pop("shape", list(x.shape)))
    request.raw_input_contents.append(changes.pop("raw", x.astype("<f4").tobytes()))
    for name in changes.pop("outputs", []):
        request.outputs.add(name=name)
    assert not changes
    return request


@pytest.fixture
def stub(server: Server) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def grpc_error(call: Any, code: grpc.StatusCode, *words: str) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, (caught.value.code(), caught.value.details())
    for word in words:
        assert word in caught.value.details(), (word, caught.value.details())
    return caught.value.details()


def test_grpc_bad_tensors(stub: Any, repo: Repo) -> None:
    x = repo.x[:1]
    bad = grpc.StatusCode.INVALID_ARGUMENT
    grpc_error(lambda: stub.ModelInfer(digits_grpc(x[:, :63]), timeout=30), bad, "input 'X' has shape [1, 63]")
    grpc_error(lambda: stub.ModelInfer(digits_grpc(x, datatype="INT32"), timeout=30), bad, "input 'X' is INT32")
    grpc_error(lambda: stub.ModelInfer(digits_grpc(x, datatype="FLOAT"), timeout=30), bad, "unknown datatype 'FLOAT'")
    grpc_error(lambda: stub.ModelInfer(digits_grpc(x, raw=b"\0" * 16), timeout=30), bad, "tensor 'X': 16 bytes given")
    grpc_error(lambda: stub.ModelInfer(digits_grpc(x, name="Y"), timeout=30), bad, "missing input(s) X")
    grpc_error(lambda: stub.ModelInfer(digits_grpc(x, outputs=["logits"]), timeout=30), bad, "no output 'logits'")
    grpc_error(lambda: stub.ModelInfer(digits_grpc(x, shape=[1] * 65, raw=b"\0" * 4), timeout=30), bad, "tensor 'X'")
    extra = digits_grpc(x)
    extra.raw_input_contents.append(b"\0" * 4)
    grpc_error(lambda: stub.ModelInfer(extra, timeout=30), bad, "raw_input_contents has 2 entries for 1 inputs")
    typed = pb.ModelInferRequest(model_name="typed")
    tensor = typed.inputs.add(name="a", datatype="INT32", shape=[3])
    tensor.contents.int_contents.extend([1, 2])
    grpc_error(lambda: stub.ModelInfer(typed, timeout=30), bad, "input 'a': 2 elements given, shape [3] holds 3")
    empty = pb.ModelInferRequest(model_name="digits")
    grpc_error(lambda: stub.ModelInfer(empty, timeout=30), bad, "missing input(s) X")


def test_grpc_unknown_model_and_version(stub: Any, repo: Repo) -> None:
    x = repo.x[:1]
    missing = grpc.StatusCode.NOT_FOUND
    nosuch = digits_grpc(x, model_name="nosuch")
    grpc_error(lambda: stub.ModelInfer(nosuch, timeout=30), missing, "unknown model 'nosuch'")
    grpc_error(lambda: stub.ModelInfer(digits_grpc(x, version="9"), timeout=30), missing, "no version 9")
    grpc_error(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="nosuch"), timeout=30), missing, "unknown model")
    grpc_error(
        lambda: stub.ModelConfig(pb.ModelConfigRequest(name="digits", version="9"), timeout=30), missing, "version 9"
    )
    grpc_error(
        lambda: stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="nosuch"), timeout=30),
        missing,
        "unknown model",
    )
    assert stub.ModelReady(pb.ModelReadyRequest(name="nosuch"), timeout=30).ready is False


@pytest.mark.parametrize("version", ["abc", "-1", "²"])
def test_grpc_non_numeric_version(stub: Any, repo: Repo, version: str) -> None:
    bad = grpc.StatusCode.INVALID_ARGUMENT
    grpc_error(lambda: stub.ModelInfer(digits_grpc(repo.x[:1], version=version), timeout=30), bad, "not a number")
    grpc_error(
        lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="digits", version=version), timeout=30),
        bad,
        "not a number",
    )


def test_grpc_bad_settings(stub: Any) -> None:
    bad = grpc.StatusCode.INVALID_ARGUMENT
    request = pb.LogSettingsRequest()
    request.settings["log_format"].string_param = "fancy"
    grpc_error(lambda: stub.LogSettings(request, timeout=30), bad, "log_format")
    request = pb.TraceSettingRequest()
    request.settings["trace_level"].value.append("LOUD")
    grpc_error(lambda: stub.TraceSetting(request, timeout=30), bad, "trace_level")
    load = pb.RepositoryModelLoadRequest(model_name="echo")
    load.parameters["config"].string_param = "1"  # JSON, but not an object
    grpc_error(lambda: stub.RepositoryModelLoad(load, timeout=30), bad, "model 'echo'")


def test_grpc_message_over_the_limit(small: Server) -> None:
    """The gRPC front end takes messages up to --max-request-bytes plus 1 MiB; past that RESOURCE_EXHAUSTED."""
    huge = np.zeros((1, (2 << 20) // 4), dtype=np.float32)
    with grpc.insecure_channel(small.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        grpc_error(lambda: stub.ModelInfer(digits_grpc(huge), timeout=30), grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_grpc_bytes_that_end_inside_an_element(stub: Any) -> None:
    request = pb.ModelInferRequest(model_name="echo")
    request.inputs.add(name="text", datatype="BYTES", shape=[1, 2])
    request.raw_input_contents.append(struct.pack("<I", 3) + b"abc" + struct.pack("<I", 10) + b"short")
    bad = grpc.StatusCode.INVALID_ARGUMENT
    grpc_error(lambda: stub.ModelInfer(request, timeout=30), bad, "tensor 'text'", "runs past")
