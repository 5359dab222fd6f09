"""Conformance: every call tritonclient offers, over HTTP and gRPC, against a running gatewright serve.

The expected values come from onnxruntime on the same model files, never from the server itself.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests.serve.conftest import Repo, Server

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

PROTOCOLS = ["http", "grpc"]


def client(server: Server, protocol: str) -> Any:
    if protocol == "http":
        return httpclient.InferenceServerClient(server.http)
    return grpcclient.InferenceServerClient(server.grpc)


def module(protocol: str) -> Any:
    return httpclient if protocol == "http" else grpcclient


def reference(model: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def digits_input(protocol: str, x: np.ndarray, binary: bool) -> Any:
    tensor = module(protocol).InferInput("X", list(x.shape), "FP32")
    if protocol == "http":
        tensor.set_data_from_numpy(x, binary_data=binary)
    else:
        tensor.set_data_from_numpy(x)
    return tensor


# -- health and metadata ---------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_and_server_metadata(server: Server, protocol: str) -> None:
    c = client(server, protocol)
    assert c.is_server_live() is True
    assert c.is_server_ready() is True
    assert c.is_model_ready("digits") is True
    assert c.is_model_ready("digits", "2") is True
    assert c.is_model_ready("nosuch") is False
    assert c.is_model_ready("digits", "9") is False
    meta = c.get_server_metadata()
    if protocol == "grpc":
        meta = {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}
    assert meta["name"] == "gatewright"
    for extension in ("binary_tensor_data", "model_repository", "statistics", "model_configuration"):
        assert extension in meta["extensions"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_metadata_and_config(server: Server, protocol: str) -> None:
    c = client(server, protocol)
    meta = c.get_model_metadata("digits", as_json=True) if protocol == "grpc" else c.get_model_metadata("digits")
    assert meta["name"] == "digits"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]] == [
        ("X", "FP32", [-1, 64])
    ]
    outputs = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta["outputs"]}
    assert outputs == {"label": ("INT64", [-1]), "probabilities": ("FP32", [-1, 10])}
    config = c.get_model_config("digits", as_json=True) if protocol == "grpc" else c.get_model_config("digits")
    config = config.get("config", config)
    assert config["name"] == "digits"
    assert int(config["max_batch_size"]) == 32  # from the model's config.pbtxt
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert [int(d) for d in config["input"][0]["dims"]] == [64]  # without the batch dimension
    assert "dynamic_batching" in config
    typed = c.get_model_config("typed", as_json=True) if protocol == "grpc" else c.get_model_config("typed")
    typed = typed.get("config", typed)
    assert int(typed.get("max_batch_size", 0)) == 0  # no variable first dimension: no batching
    assert [int(d) for d in typed["input"][0]["dims"]] == [3]
    with pytest.raises(InferenceServerException, match="unknown model 'nosuch'"):
        c.get_model_metadata("nosuch")
    with pytest.raises(InferenceServerException, match="no version 7"):
        c.get_model_config("digits", "7")


# -- inference -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("binary", [False, True])
def test_infer_digits_matches_onnxruntime(server: Server, repo: Repo, protocol: str, binary: bool) -> None:
    c = client(server, protocol)
    x = repo.x[100:108]
    outputs = [module(protocol).InferRequestedOutput(name) for name in ("label", "probabilities")]
    if protocol == "http":
        outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in ("label", "probabilities")]
    result = c.infer("digits", [digits_input(protocol, x, binary)], outputs=outputs, request_id="r-1")
    want = reference(repo.digits_v2, {"X": x})  # no version given: the latest, 2
    np.testing.assert_array_equal(result.as_numpy("label"), want["label"])
    np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"], rtol=1e-6, atol=1e-7)
    response = result.get_response(as_json=True) if protocol == "grpc" else result.get_response()
    assert response["model_name"] == "digits"
    assert response["model_version"] == "2"
    assert response["id"] == "r-1"
    assert (want["label"] == repo.y[100:108]).mean() > 0.7  # a sanity check that the model is the digits MLP


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_infer_a_chosen_version(server: Server, repo: Repo, protocol: str) -> None:
    c = client(server, protocol)
    x = repo.x[:5]
    one = c.infer("digits", [digits_input(protocol, x, True)], model_version="1")
    two = c.infer("digits", [digits_input(protocol, x, True)], model_version="2")
    np.testing.assert_allclose(
        one.as_numpy("probabilities"), reference(repo.digits_v1, {"X": x})["probabilities"], rtol=1e-6
    )
    np.testing.assert_allclose(
        two.as_numpy("probabilities"), reference(repo.digits_v2, {"X": x})["probabilities"], rtol=1e-6
    )
    assert not np.allclose(one.as_numpy("probabilities"), two.as_numpy("probabilities"))


def test_http_mixes_json_and_binary_tensors(server: Server) -> None:
    """Inputs: one JSON, two binary; outputs: one JSON, one binary."""
    c = httpclient.InferenceServerClient(server.http)
    a = np.array([1, -2, 300], dtype=np.int32)
    b = np.array([5, 6, -7], dtype=np.int32)
    flag = np.array([True, False, True])
    inputs = [
        httpclient.InferInput("a", [3], "INT32"),
        httpclient.InferInput("b", [3], "INT32"),
        httpclient.InferInput("flag", [3], "BOOL"),
    ]
    inputs[0].set_data_from_numpy(a, binary_data=False)
    inputs[1].set_data_from_numpy(b, binary_data=True)
    inputs[2].set_data_from_numpy(flag, binary_data=True)
    outputs = [
        httpclient.InferRequestedOutput("sum", binary_data=True),
        httpclient.InferRequestedOutput("negated", binary_data=False),
    ]
    result = c.infer("typed", inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    np.testing.assert_array_equal(result.as_numpy("negated"), ~flag)
    body = result.get_response()
    by_name = {o["name"]: o for o in body["outputs"]}
    assert by_name["sum"]["parameters"]["binary_data_size"] == 12
    assert by_name["negated"]["data"] == [False, True, False]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bytes_tensors(server: Server, protocol: str) -> None:
    c = client(server, protocol)
    text = np.array([["héllo", "world"], ["", "x" * 300]], dtype=object)
    tensor = module(protocol).InferInput("text", [2, 2], "BYTES")
    if protocol == "http":
        tensor.set_data_from_numpy(text, binary_data=True)
    else:
        tensor.set_data_from_numpy(text)
    result = c.infer("echo", [tensor])
    got = result.as_numpy("echo")
    assert got.shape == (2, 2)
    assert [v.decode() if isinstance(v, bytes) else v for v in got.ravel()] == ["héllo", "world", "", "x" * 300]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_classification_extension(server: Server, repo: Repo, protocol: str) -> None:
    c = client(server, protocol)
    x = repo.x[:3]
    result = c.infer(
        "digits",
        [digits_input(protocol, x, True)],
        outputs=[module(protocol).InferRequestedOutput("probabilities", class_count=2)],
    )
    top = result.as_numpy("probabilities")
    assert top.shape == (3, 2)
    probs = reference(repo.digits_v2, {"X": x})["probabilities"]
    for row in range(3):
        value, index = top[row, 0].decode().split(":")
        assert int(index) == int(np.argmax(probs[row]))
        assert float(value) == pytest.approx(float(probs[row].max()), abs=1e-5)


def test_http_compression_both_ways(server: Server, repo: Repo) -> None:
    c = httpclient.InferenceServerClient(server.http)
    x = repo.x[:16]
    for algorithm in ("gzip", "deflate"):
        result = c.infer(
            "digits",
            [digits_input("http", x, True)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm="gzip",
        )
        np.testing.assert_array_equal(result.as_numpy("label"), reference(repo.digits_v2, {"X": x})["label"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_infer(server: Server, repo: Repo, protocol: str) -> None:
    if protocol == "http":
        c = httpclient.InferenceServerClient(server.http, concurrency=4)
        pending = [c.async_infer("digits", [digits_input("http", repo.x[i : i + 1], True)]) for i in range(12)]
        labels = [int(p.get_result().as_numpy("label")[0]) for p in pending]
    else:
        c = grpcclient.InferenceServerClient(server.grpc)
        results: list[Any] = [None] * 12
        import threading

        done = threading.Semaphore(0)

        def callback(index: int, result: Any, error: Any) -> None:
            results[index] = error or result
            done.release()

        for i in range(12):
            c.async_infer(
                "digits",
                [digits_input("grpc", repo.x[i : i + 1], True)],
                callback=lambda result, error, i=i: callback(i, result, error),
            )
        for _ in range(12):
            assert done.acquire(timeout=30)
        labels = [int(r.as_numpy("label")[0]) for r in results]
    assert labels == [int(v) for v in reference(repo.digits_v2, {"X": repo.x[:12]})["label"]]


def test_grpc_stream_infer_keeps_going_after_a_bad_request(server: Server, repo: Repo) -> None:
    c = grpcclient.InferenceServerClient(server.grpc)
    got: list[Any] = []
    import queue

    answers: queue.Queue[Any] = queue.Queue()
    c.start_stream(callback=lambda result, error: answers.put((result, error)))
    c.async_stream_infer("digits", [digits_input("grpc", repo.x[:2], True)], request_id="a")
    bad = grpcclient.InferInput("X", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    c.async_stream_infer("digits", [bad], request_id="b")
    c.async_stream_infer("digits", [digits_input("grpc", repo.x[2:4], True)], request_id="c")
    for _ in range(3):
        got.append(answers.get(timeout=30))
    c.stop_stream()
    first, second, third = got
    assert first[1] is None and first[0].get_response().id == "a"
    assert second[0] is None and "shape [1, 3]" in str(second[1])
    np.testing.assert_array_equal(third[0].as_numpy("label"), reference(repo.digits_v2, {"X": repo.x[2:4]})["label"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_firmware_bundle_serves_on_emu(server: Server, repo: Repo, protocol: str) -> None:
    from gatewright import devices

    c = client(server, protocol)
    x = np.linspace(-2, 2, 18, dtype=np.float32).reshape(3, 6)
    config = c.get_model_config("mlp_bundle", as_json=True) if protocol == "grpc" else c.get_model_config("mlp_bundle")
    config = config.get("config", config)
    assert config["parameters"]["device"]["string_value"] == "emu"
    meta = (
        c.get_model_metadata("mlp_bundle", as_json=True) if protocol == "grpc" else c.get_model_metadata("mlp_bundle")
    )
    tensor = module(protocol).InferInput(meta["inputs"][0]["name"], [3, 6], "FP32")
    tensor.set_data_from_numpy(x)
    result = c.infer("mlp_bundle", [tensor])
    with devices.open("emu") as emu:
        want = emu.load(repo.path / "mlp_bundle" / "1").infer({meta["inputs"][0]["name"]: x})
    for name, value in want.items():
        np.testing.assert_array_equal(result.as_numpy(name), value)  # bit-exact with the emulator


def test_a_non_tensor_output_is_left_out(server: Server) -> None:
    meta = httpclient.InferenceServerClient(server.http).get_model_metadata("zipmap")
    assert [o["name"] for o in meta["outputs"]] == ["output_label"]


# -- statistics ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_statistics_count_requests(server: Server, repo: Repo, protocol: str) -> None:
    c = client(server, protocol)

    def stats() -> dict[str, Any]:
        got = (
            c.get_inference_statistics("digits", "1", as_json=True)
            if protocol == "grpc"
            else c.get_inference_statistics("digits", "1")
        )
        return got["model_stats"][0]

    before = stats()
    for _ in range(3):
        c.infer("digits", [digits_input(protocol, repo.x[:4], True)], model_version="1")
    with pytest.raises(InferenceServerException):
        bad = module(protocol).InferInput("X", [1, 5], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 5), dtype=np.float32))
        c.infer("digits", [bad], model_version="1")
    after = stats()

    def n(stat: dict[str, Any], *path: str) -> int:
        for key in path:
            stat = stat.get(key, {})
        return int(stat or 0)

    assert n(after, "inference_stats", "success", "count") - n(before, "inference_stats", "success", "count") == 3
    assert n(after, "inference_stats", "fail", "count") - n(before, "inference_stats", "fail", "count") == 1
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 12
    assert int(after["execution_count"]) - int(before.get("execution_count", 0)) == 3
    assert n(after, "inference_stats", "compute_infer", "ns") > n(before, "inference_stats", "compute_infer", "ns")
    assert any(int(b["batch_size"]) == 4 for b in after["batch_stats"])
    every = c.get_inference_statistics(as_json=True) if protocol == "grpc" else c.get_inference_statistics()
    names = {(s["name"], s["version"]) for s in every["model_stats"]}
    assert {("digits", "1"), ("digits", "2"), ("echo", "1")} <= names


# -- the repository extension ----------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_repository_index_load_and_unload(server: Server, repo: Repo, protocol: str) -> None:
    c = client(server, protocol)

    def index(ready: bool = False) -> list[dict[str, Any]]:
        got = c.get_model_repository_index(as_json=True) if protocol == "grpc" else c.get_model_repository_index()
        models = got["models"] if protocol == "grpc" else got
        if ready:
            got = c.get_model_repository_index(as_json=True) if protocol == "grpc" else None
        return models

    entries = {(m["name"], m.get("version", "")): m.get("state", "") for m in index()}
    assert entries[("digits", "1")] == "READY" and entries[("digits", "2")] == "READY"
    assert entries[("echo", "1")] == "READY"
    c.unload_model("echo")
    assert c.is_model_ready("echo") is False
    with pytest.raises(InferenceServerException, match="not ready"):
        c.get_model_metadata("echo")
    entries = {(m["name"], m.get("version", "")): m.get("state", "") for m in index()}
    assert ("echo", "1") not in entries and entries[("echo", "")] == "UNAVAILABLE"
    c.load_model("echo")
    assert c.is_model_ready("echo") is True
    with pytest.raises(InferenceServerException, match="no model 'nosuch' in the model repository"):
        c.load_model("nosuch")
    assert c.is_server_live() is True


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_load_a_model_from_files_with_a_config(server: Server, repo: Repo, protocol: str) -> None:
    c = client(server, protocol)
    name = f"uploaded_{protocol}"
    config = json.dumps({"max_batch_size": 8})
    c.load_model(name, config=config, files={"file:1/model.onnx": repo.digits_v1})
    x = repo.x[:3]
    result = c.infer(name, [digits_input(protocol, x, True)])
    np.testing.assert_array_equal(result.as_numpy("label"), reference(repo.digits_v1, {"X": x})["label"])
    got = c.get_model_config(name, as_json=True) if protocol == "grpc" else c.get_model_config(name)
    assert int(got.get("config", got)["max_batch_size"]) == 8
    c.unload_model(name)
    assert c.is_model_ready(name) is False


# -- shared memory ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_system_shared_memory_inputs_and_outputs(server: Server, repo: Repo, protocol: str) -> None:
    shm = pytest.importorskip("tritonclient.utils.shared_memory")
    c = client(server, protocol)
    x = np.ascontiguousarray(repo.x[:4])
    in_handle = shm.create_shared_memory_region(f"in_{protocol}", f"/gw_in_{protocol}", x.nbytes)
    out_handle = shm.create_shared_memory_region(f"out_{protocol}", f"/gw_out_{protocol}", 4 * 10 * 4)
    try:
        shm.set_shared_memory_region(in_handle, [x])
        c.register_system_shared_memory(f"in_{protocol}", f"/gw_in_{protocol}", x.nbytes)
        c.register_system_shared_memory(f"out_{protocol}", f"/gw_out_{protocol}", 160)
        status = (
            c.get_system_shared_memory_status(as_json=True)
            if protocol == "grpc"
            else c.get_system_shared_memory_status()
        )
        listed = status["regions"].keys() if protocol == "grpc" else [r["name"] for r in status]
        assert {f"in_{protocol}", f"out_{protocol}"} <= set(listed)
        tensor = module(protocol).InferInput("X", [4, 64], "FP32")
        tensor.set_shared_memory(f"in_{protocol}", x.nbytes)
        out = module(protocol).InferRequestedOutput("probabilities")
        out.set_shared_memory(f"out_{protocol}", 160)
        result = c.infer("digits", [tensor], outputs=[out])
        meta = result.get_output("probabilities")
        assert meta is not None
        probs = shm.get_contents_as_numpy(out_handle, np.float32, [4, 10])
        np.testing.assert_allclose(probs, reference(repo.digits_v2, {"X": x})["probabilities"], rtol=1e-6)
        c.unregister_system_shared_memory(f"in_{protocol}")
        c.unregister_system_shared_memory()
        status = (
            c.get_system_shared_memory_status(as_json=True)
            if protocol == "grpc"
            else c.get_system_shared_memory_status()
        )
        assert not (status.get("regions") if protocol == "grpc" else status)
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cuda_shared_memory_says_there_is_no_gpu(server: Server, protocol: str) -> None:
    c = client(server, protocol)
    status = c.get_cuda_shared_memory_status(as_json=True) if protocol == "grpc" else c.get_cuda_shared_memory_status()
    assert not (status.get("regions") if protocol == "grpc" else status)
    with pytest.raises(InferenceServerException, match="no GPU"):
        c.register_cuda_shared_memory("gpu0", base64.b64encode(b"cuda-ipc-handle"), 0, 64)
    c.unregister_cuda_shared_memory()


# -- trace and log settings ------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_trace_settings_write_a_trace(server: Server, repo: Repo, protocol: str, tmp_path: Path) -> None:
    c = client(server, protocol)
    trace = tmp_path / "trace.jsonl"
    c.update_trace_settings(settings={"trace_file": str(trace), "trace_level": ["TIMESTAMPS"], "trace_rate": "1"})
    got = c.get_trace_settings(as_json=True) if protocol == "grpc" else c.get_trace_settings()
    if protocol == "grpc":
        got = {k: v["value"] for k, v in got["settings"].items()}
        assert got["trace_level"] == ["TIMESTAMPS"] and got["trace_rate"] == ["1"]
    else:
        assert got["trace_level"] == ["TIMESTAMPS"] and got["trace_rate"] == "1"
    try:
        c.infer("digits", [digits_input(protocol, repo.x[:1], True)], request_id="traced")
    finally:
        c.update_trace_settings(settings={"trace_level": ["OFF"], "trace_file": None, "trace_rate": None})
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert lines and lines[-1]["model_name"] == "digits" and lines[-1]["request_id"] == "traced"
    stamps = [t["name"] for t in lines[-1]["timestamps"]]
    assert stamps[0].endswith("_RECV_START") and stamps[-1].endswith("_SEND_START")
    with pytest.raises(InferenceServerException, match="trace_level"):
        c.update_trace_settings(settings={"trace_level": ["LOUD"]})


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_log_settings(server: Server, protocol: str) -> None:
    c = client(server, protocol)
    got = c.update_log_settings({"log_verbose_level": 1, "log_info": True})
    got = c.get_log_settings(as_json=True) if protocol == "grpc" else c.get_log_settings()
    if protocol == "grpc":
        got = {k: next(iter(v.values())) for k, v in got["settings"].items()}
    assert int(got["log_verbose_level"]) == 1
    c.update_log_settings({"log_verbose_level": 0})
    with pytest.raises(InferenceServerException, match="log_format"):
        c.update_log_settings({"log_format": "fancy"})


def test_http_load_rejects_bad_base64(server: Server) -> None:
    import urllib.error
    import urllib.request

    body = json.dumps({"parameters": {"config": "{}", "file:1/model.onnx": "not base64!"}}).encode()
    request = urllib.request.Request(f"{server.base}/v2/repository/models/x/load", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 400
    assert "base64" in json.loads(caught.value.read())["error"]
