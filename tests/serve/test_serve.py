"""The server beyond tritonclient: KServe v1, the KServe container arguments, dynamic batching,
/metrics and several clients at once."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.serve.conftest import Repo, Server, call, start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]


def infer_body(x: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


def reference(model: bytes, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"X": x})


def test_kserve_v1_predict(server: Server, repo: Repo) -> None:
    x = repo.x[20:23]
    status, answer = call(server, "/v1/models/digits:predict", {"instances": x.tolist()})
    assert status == 200
    label, probabilities = reference(repo.digits_v2, x)
    assert [p["label"] for p in answer["predictions"]] == label.tolist()
    np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]], probabilities, rtol=1e-6)
    assert call(server, "/v1/models/digits") == (200, {"name": "digits", "ready": True})
    status, listed = call(server, "/v1/models")
    assert status == 200 and "digits" in listed["models"]
    status, answer = call(server, "/v1/models/digits:predict", {"instances": [[1.0, 2.0]]})
    assert status == 400 and "shape" in answer["error"]
    status, answer = call(server, "/v1/models/nosuch:predict", {"instances": [[1.0]]})
    assert status == 404 and "nosuch" in answer["error"]


def test_every_answer_carries_its_length_not_chunks(server: Server, repo: Repo) -> None:
    """Content-Length on successes and errors alike: one write per body, and the client knows at once when it has all
    of it (uvicorn's default without one is chunked transfer encoding)."""
    import http.client

    connection = http.client.HTTPConnection(server.http, timeout=30)
    body = json.dumps(infer_body(repo.x[:1])).encode()
    for method, path, data, status in (
        ("POST", "/v2/models/digits/infer", body, 200),
        ("POST", "/v2/models/digits/infer", b"{not json", 400),
        ("GET", "/v2/models/nosuch", None, 404),
        ("GET", "/v2/health/ready", None, 200),
    ):
        connection.request(method, path, data, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        raw = answer.read()
        assert answer.status == status
        assert answer.getheader("Transfer-Encoding") is None
        assert answer.getheader("Content-Length") == str(len(raw)) and raw
    connection.close()


def test_metrics_follow_the_requests(server: Server, repo: Repo) -> None:
    def families() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        with urllib.request.urlopen(server.base + "/metrics") as answer:
            text = answer.read().decode()
        found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return found

    key = (("model", "digits"), ("version", "1"))
    before = families()
    for size in (1, 3, 5):
        status, _ = call(server, "/v2/models/digits/versions/1/infer", infer_body(repo.x[:size]))
        assert status == 200
    status, _ = call(server, "/v2/models/digits/versions/1/infer", infer_body(repo.x[:1, :10]))
    assert status == 400
    after = families()

    def delta(name: str, labels: tuple[tuple[str, str], ...] = key) -> float:
        return after[name][labels] - before.get(name, {}).get(labels, 0.0)

    assert delta("nv_inference_request_success") == 3
    assert delta("nv_inference_count") == 9
    assert delta("nv_inference_exec_count") == 3
    assert delta("nv_inference_request_failure", (*key[:1], ("reason", "REJECTED"), key[1])) == 1
    assert delta("nv_inference_compute_infer_duration_us") > 0
    assert delta("nv_inference_request_duration_us") >= delta("nv_inference_compute_infer_duration_us")
    device = (("device", "cpu"), ("model", "digits"), ("quantile", "0.5"), ("version", "1"))
    assert after["gatewright_device_latency_us"][device] > 0
    bundle = (("device", "emu"), ("model", "mlp_bundle"), ("version", "1"))
    assert bundle in after["gatewright_device_errors_total"]


def test_dynamic_batching_merges_concurrent_requests(repo: Repo, tmp_path: Path) -> None:
    """Eight clients at once, a 50 ms queue delay: the requests run as (far) fewer batches, and each
    client gets its own rows back."""
    root = tmp_path / "repo"
    (root / "digits" / "1").mkdir(parents=True)
    (root / "digits" / "1" / "model.onnx").write_bytes(repo.digits_v1)
    (root / "digits" / "config.pbtxt").write_text(
        "max_batch_size: 16\ndynamic_batching { max_queue_delay_microseconds: 50000 }\n"
    )
    server = start_server(["--model-repository", str(root)], tmp_path / "serve.log")
    try:
        results: dict[int, Any] = {}
        gate = threading.Barrier(8)

        def client(i: int) -> None:
            gate.wait()
            results[i] = call(server, "/v2/models/digits/infer", infer_body(repo.x[i * 2 : i * 2 + 2]))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        labels, _ = reference(repo.digits_v1, repo.x[:16])
        for i in range(8):
            status, answer = results[i]
            assert status == 200
            got = next(o for o in answer["outputs"] if o["name"] == "label")
            assert got["data"] == labels[i * 2 : i * 2 + 2].tolist()
        status, stats = call(server, "/v2/models/digits/stats")
        model = stats["model_stats"][0]
        assert model["inference_count"] == 16
        assert model["execution_count"] < 8  # merged
        assert max(b["batch_size"] for b in model["batch_stats"]) >= 4
        assert model["inference_stats"]["queue"]["ns"] > 0
        status, config = call(server, "/v2/models/digits/config")
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 50000
        assert config["max_batch_size"] == 16
        status, answer = call(server, "/v2/models/digits/infer", infer_body(repo.x[:17]))
        assert status == 400 and "maximum is 16" in answer["error"]
    finally:
        stop_server(server)


def test_the_kserve_servingruntime_arguments_start_the_server(repo: Repo, tmp_path: Path) -> None:
    """The exact arguments deploy/kserve/servingruntime.yaml gives, with a model mounted as KServe mounts it."""
    runtime = yaml.safe_load((ROOT / "deploy" / "kserve" / "servingruntime.yaml").read_text())
    container = runtime["spec"]["containers"][0]
    args = [a.replace("{{.Name}}", "digits-isvc") for a in container["args"]]
    mounted = tmp_path / "mnt" / "models"
    mounted.mkdir(parents=True)
    (mounted / "model.onnx").write_bytes(repo.digits_v1)
    args = [a.replace("/mnt/models", str(mounted)) for a in args]
    assert any(a.startswith("--model_name=") for a in args) and any(a.startswith("--model_dir=") for a in args)
    fixed_ports = [a for a in args if a.split("=")[0] in ("--http_port", "--grpc_port")]
    assert fixed_ports  # the runtime pins its ports; replaced below by free ones for the test
    args = [a for a in args if a not in fixed_ports]
    server = start_server(args, tmp_path / "serve.log")
    try:
        x = repo.x[:4]
        status, answer = call(server, "/v2/models/digits-isvc/infer", infer_body(x))
        assert status == 200
        label = next(o for o in answer["outputs"] if o["name"] == "label")
        assert label["data"] == reference(repo.digits_v1, x)[0].tolist()
        status, answer = call(server, "/v1/models/digits-isvc:predict", {"instances": x.tolist()})
        assert status == 200 and len(answer["predictions"]) == 4
    finally:
        stop_server(server)


def test_a_model_that_fails_to_load_keeps_the_server_unready_and_says_why(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "good" / "1").mkdir(parents=True)
    (root / "good" / "1" / "model.onnx").write_bytes(repo.digits_v1)
    (root / "broken").mkdir()
    (root / "broken" / "model.onnx").write_bytes(b"not an onnx model")
    server = start_server(["--model-repository", str(root)], tmp_path / "serve.log", ready=False)
    try:
        assert call(server, "/v2/health/live")[0] == 200
        status, answer = call(server, "/v2/health/ready")
        assert status == 400 and answer == {"ready": False}
        status, index = call(server, "/v2/repository/index", {})
        states = {(m["name"], m["version"]): m for m in index}
        assert states[("good", "1")]["state"] == "READY"
        assert states[("broken", "1")]["state"] == "UNAVAILABLE"
        assert "broken" in states[("broken", "1")]["reason"] or "onnx" in states[("broken", "1")]["reason"].lower()
        assert call(server, "/v2/models/good/infer", infer_body(repo.x[:1]))[0] == 200
        status, answer = call(server, "/v2/models/broken/infer", infer_body(repo.x[:1]))
        assert status == 503 and "not ready" in answer["error"]
        shutil.rmtree(root / "broken")
        status, answer = call(server, "/v2/repository/models/broken/unload", {})
        assert status == 200
        assert call(server, "/v2/health/ready")[0] == 200  # nothing left that should run and does not
    finally:
        stop_server(server)


def test_serve_cli_errors_are_clean(tmp_path: Path) -> None:
    import subprocess
    import sys

    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gatewright.cli", "serve", *args], capture_output=True, text=True, timeout=60
        )

    missing = serve("--model-repository", str(tmp_path / "nowhere"), "--http-port", "0", "--grpc-port", "0")
    assert missing.returncode == 2
    assert "nowhere" in missing.stderr and "Traceback" not in missing.stderr
    no_dir = serve("--model_name", "m", "--model_dir", str(tmp_path / "absent"))
    assert no_dir.returncode == 2 and "absent" in no_dir.stderr and "Traceback" not in no_dir.stderr
    both = serve("--model-repository", str(tmp_path), "--model_name", "m")
    assert both.returncode == 2 and "not both" in both.stderr


def test_kserves_own_python_clients(server: Server, repo: Repo, tmp_path: Path) -> None:
    """KServe's InferenceRESTClient (v1 and v2) and InferenceGRPCClient, where kserve installs."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("kserve") is None:  # not imported here: its protobufs clash with tritonclient's
        pytest.skip("kserve is not installed")
    x = repo.x[30:35]
    np.save(tmp_path / "x.npy", x)
    script = Path(__file__).parent / "scripts" / "kserve_client.py"
    done = subprocess.run(
        [sys.executable, str(script), server.http, server.grpc, str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    labels = reference(repo.digits_v2, x)[0].tolist()
    assert found["rest_v1_labels"] == labels
    assert found["rest_v2_labels"] == labels
    assert found["grpc_labels"] == labels
    assert found["rest_v2_id"] == "k1" and found["grpc_id"] == "k2"
    for key in (
        "rest_v1_live",
        "rest_v2_live",
        "rest_v2_ready",
        "rest_v1_model_ready",
        "rest_v2_model_ready",
        "grpc_live",
        "grpc_ready",
        "grpc_model_ready",
    ):
        assert found[key] is True, key


@pytest.mark.slow
@pytest.mark.toolchain
def test_a_bundle_on_the_simulated_rtl_with_cycles_in_the_metrics(repo: Repo, tmp_path: Path) -> None:
    """--device sim: the bundle runs on the Verilator simulation of its RTL, bit-exact with emu, and
    the simulator's clock cycles reach /metrics."""
    from gatewright import devices
    from gatewright.build.pipeline import build
    from tests import onnx_models as om

    work = tmp_path / "work"
    work.mkdir()
    (work / "m.onnx").write_bytes(om.pytorch_mlp([6, 12, 4], seed=3))
    np.save(work / "calib.npy", om.rng(1).normal(size=(200, 6)).astype(np.float32))
    root = tmp_path / "repo"
    (root / "mlp").mkdir(parents=True)
    build(work / "m.onnx", root / "mlp" / "1", until="sim", calibration=work / "calib.npy")
    server = start_server(["--model-repository", str(root), "--device", "sim"], tmp_path / "serve.log", timeout=300)
    try:
        status, meta = call(server, "/v2/models/mlp")
        name = meta["inputs"][0]["name"]
        x = np.linspace(-1.5, 1.5, 30, dtype=np.float32).reshape(5, 6)
        body = {"inputs": [{"name": name, "shape": [5, 6], "datatype": "FP32", "data": x.ravel().tolist()}]}
        status, answer = call(server, "/v2/models/mlp/infer", body)
        assert status == 200
        with devices.open("emu") as emu:
            want = emu.load(root / "mlp" / "1").infer({name: x})
        for out in answer["outputs"]:
            assert out["datatype"] == "FP32"
            got = np.array(out["data"], dtype=np.float32).reshape(out["shape"])
            np.testing.assert_array_equal(got, want[out["name"]].astype(np.float32))
        status, config = call(server, "/v2/models/mlp/config")
        assert config["parameters"]["device"]["string_value"] == "sim"
        with urllib.request.urlopen(server.base + "/metrics") as metrics:
            text = metrics.read().decode()
        cycles = [
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "gatewright_device_cycles_total" and s.labels["device"] == "sim"
        ]
        assert cycles and cycles[0] > 0
    finally:
        stop_server(server)
