"""The control plane end to end, as users drive it: a real `gatewright control` process, the CLI and
the REST API, builds that really run, the inference server the deployments publish, restarts."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import yaml

from gatewright import devices
from gatewright.store import open_store
from tests.control.conftest import GATEWRIGHT, TOKEN, Digits, _free_port, spec, start_control
from tests.onnx_models import sklearn_mlp


def infer_rest(endpoint: str, x: np.ndarray) -> dict[str, np.ndarray]:
    body = {"inputs": [{"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    answer = httpx.post(f"{endpoint}/infer", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]}


def tar_sha256(plane_data: object, key: str) -> str:
    store = open_store((plane_data / "store").as_uri())  # type: ignore[operator]
    return hashlib.sha256(store.bundle_bytes(key)).hexdigest()


@pytest.mark.slow
@pytest.mark.toolchain
def test_spec_to_a_serving_endpoint_on_the_simulated_device_and_through_a_kill(
    tmp_path, digits: Digits, control_factory
) -> None:
    plane = start_control(tmp_path / "data", "--allow-root", str(digits.folder))
    control_factory.append(plane)
    spec_file = tmp_path / "digits.yaml"
    body = spec("digits", digits.model, device={"kind": "sim"})
    body["spec"]["model"]["calibration"] = digits.calibration.as_uri()  # type: ignore[index]
    spec_file.write_text(yaml.safe_dump(body))

    applied = plane.cli("apply", "-f", str(spec_file), "--wait", "-o", "json")
    status = json.loads(applied.stdout)
    assert status["phase"] == "Ready", status
    assert status["device"] == "sim"
    endpoints = status["endpoints"]
    assert endpoints["rest"] == f"{plane.rest}/v2/models/digits"
    assert endpoints["grpc"] == plane.grpc and endpoints["protocol"] == "v2"
    assert endpoints["model_uri"] == digits.model.as_uri()
    assert "job" in applied.stderr or status["job"]  # the build ran as a job

    # predictions from the endpoint: the simulated RTL, bit-exact with the emulator on the stored bundle
    x = digits.x[:32]
    served = infer_rest(endpoints["rest"], x)
    key = status["bundle"]
    bundle = open_store((plane.data / "store").as_uri()).get_bundle(key, tmp_path / "pulled.bundle")
    with devices.open("emu") as emu:
        expected = emu.load(bundle).infer({"X": x})
    assert np.array_equal(served["label"].ravel(), expected["label"].ravel())
    assert np.allclose(served["probabilities"], expected["probabilities"], atol=0)
    float_labels = ort.InferenceSession(str(digits.model)).run(["label"], {"X": x})[0]
    assert np.mean(served["label"].ravel() == float_labels) >= 0.9

    # gRPC endpoint, with Triton's own client
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(endpoints["grpc"])
    tensor = grpcclient.InferInput("X", [4, 64], "FP32")
    tensor.set_data_from_numpy(x[:4])
    result = client.infer("digits", [tensor])
    assert np.array_equal(result.as_numpy("label").ravel(), expected["label"][:4].ravel())

    logs = plane.cli("logs", "digits").stdout
    assert "quantize   start" in logs and "sim        done" in logs and "Ready: serving" in logs
    jobs = httpx.get(f"{plane.url}/api/v1/jobs", headers={"authorization": f"Bearer {TOKEN}"}).json()["jobs"]
    assert [(j["deployment"], j["state"]) for j in jobs] == [("digits", "succeeded")]
    job_log = httpx.get(f"{plane.url}/api/v1/jobs/{jobs[0]['id']}/logs", headers={"authorization": f"Bearer {TOKEN}"})
    tar_before = tar_sha256(plane.data, key)

    # kill -9 and restart: the deployment, its bundle and every log line come back; nothing is rebuilt
    assert plane.stop(signal.SIGKILL) == -signal.SIGKILL
    again = start_control(tmp_path / "data", "--allow-root", str(digits.folder))
    control_factory.append(again)
    restored = again.wait("digits")
    assert restored["bundle"] == key and restored["generation"] == 1
    assert restored["endpoints"]["rest"] == f"{again.rest}/v2/models/digits"
    assert np.array_equal(infer_rest(restored["endpoints"]["rest"], x)["label"], served["label"])
    assert tar_sha256(again.data, key) == tar_before
    logs_after = again.cli("logs", "digits").stdout
    assert logs_after.startswith(logs)  # every line from before the kill, in order, then the new ones
    jobs_after = httpx.get(f"{again.url}/api/v1/jobs", headers={"authorization": f"Bearer {TOKEN}"}).json()["jobs"]
    assert [j["id"] for j in jobs_after] == [jobs[0]["id"]]
    job_log_after = httpx.get(
        f"{again.url}/api/v1/jobs/{jobs[0]['id']}/logs", headers={"authorization": f"Bearer {TOKEN}"}
    )
    assert job_log_after.text == job_log.text and "bit-exact" in job_log.text

    # delete: the endpoint goes away and so does the deployment
    again.cli("delete", "digits")
    deadline = time.monotonic() + 30
    while again.client().list() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert again.client().list() == []
    assert httpx.post(f"{again.rest}/v2/models/digits/infer", json={"inputs": []}).status_code in (400, 404)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_state_survives_a_restart_and_the_password_never_shows(
    tmp_path, digits: Digits, postgres_url: str, control_factory
) -> None:
    password = postgres_url.split(":")[2].split("@")[0]
    args = ["--db", postgres_url, "--allow-root", str(digits.folder)]
    plane = start_control(tmp_path / "data", *args)
    control_factory.append(plane)
    with plane.client() as client:
        client.apply(json.dumps(spec("digits-cpu", digits.model, engine="onnx")))
        client.apply(json.dumps(spec("digits-emu", digits.model, device={"kind": "emu"})))
    ready = {name: plane.wait(name) for name in ("digits-cpu", "digits-emu")}
    assert ready["digits-cpu"]["device"] == "cpu" and ready["digits-emu"]["device"] == "emu"
    labels_cpu = infer_rest(ready["digits-cpu"]["endpoints"]["rest"], digits.x[:16])["label"]
    assert np.mean(labels_cpu.ravel() == digits.y[:16]) >= 0.8

    assert plane.stop(signal.SIGTERM) == 0  # a clean stop
    again = start_control(tmp_path / "data-elsewhere", *args)  # a fresh folder: the state is in PostgreSQL
    control_factory.append(again)
    for name in ("digits-cpu", "digits-emu"):
        restored = again.wait(name)
        assert restored["generation"] == 1 and restored["device"] == ready[name]["device"]
    assert np.array_equal(infer_rest(f"{again.rest}/v2/models/digits-cpu", digits.x[:16])["label"], labels_cpu)

    seen = [plane.banner, again.banner, plane.log.read_text(), again.log.read_text()]
    with again.client() as client:
        seen += [json.dumps(client.list()), client.logs("digits-emu"), client.request("GET", "/jobs").text]
    assert all(password not in text for text in seen)
    assert "gw:***@127.0.0.1" in again.banner  # the database is named, its password hidden


@pytest.mark.slow
def test_failures_are_reported_with_their_reason_and_retried_on_apply(
    tmp_path, digits: Digits, control_factory
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "digits.onnx").write_bytes(digits.model.read_bytes())
    plane = start_control(tmp_path / "data", "--allow-root", str(digits.folder))
    control_factory.append(plane)
    with plane.client() as client:
        client.apply(json.dumps(spec("missing", digits.folder / "nope.onnx", device={"kind": "emu"})))
        client.apply(json.dumps(spec("escape", outside / "digits.onnx", device={"kind": "emu"})))
        sneaky_path = digits.folder / ".." / os.path.relpath(outside / "digits.onnx", digits.folder.parent)
        client.apply(json.dumps(spec("sneaky", sneaky_path)))
        missing = plane.wait("missing", "Failed")
        escape = plane.wait("escape", "Failed")
        sneaky = plane.wait("sneaky", "Failed")
        assert "nope.onnx" in missing["reason"]
        assert "--allow-root" in escape["reason"] and "--allow-root" in sneaky["reason"]
        assert "Failed:" in client.logs("missing")
        assert missing["endpoints"] == {}

        # fixed in place and applied again: retried, and served
        (digits.folder / "nope.onnx").write_bytes(digits.model.read_bytes())
        try:
            _, created = client.apply(json.dumps(spec("missing", digits.folder / "nope.onnx", device={"kind": "emu"})))
            assert not created
            retried = plane.wait("missing")
            assert retried["generation"] == 2 and retried["phase"] == "Ready"
        finally:
            (digits.folder / "nope.onnx").unlink()

    # bad specs: the CLI says which field and exits 2; the API answers 400 with {"error"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: gatewright/v1\nkind: Deployment\nmetadata: {name: Bad_Name}\nspec: {engine: gpu}\n")
    result = plane.cli("apply", "-f", str(bad), check=False)
    assert result.returncode == 2
    assert "metadata.name" in result.stderr and "spec.model: required field missing" in result.stderr
    assert "spec.engine" in result.stderr and "Traceback" not in result.stderr
    headers = {"authorization": f"Bearer {TOKEN}"}
    answer = httpx.post(f"{plane.url}/api/v1/deployments", content="{not json", headers=headers)
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]
    assert httpx.get(f"{plane.url}/api/v1/deployments/nobody", headers=headers).status_code == 404
    assert httpx.get(f"{plane.url}/api/v1/deployments").status_code == 401
    wrong = httpx.get(f"{plane.url}/api/v1/deployments", headers={"authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and "token" in wrong.json()["error"]
    put = httpx.put(f"{plane.url}/api/v1/deployments/other", json=spec("missing", digits.model), headers=headers)
    assert put.status_code == 400 and "metadata.name" in put.json()["error"]
    no_token = subprocess.run(
        [*GATEWRIGHT, "get"], capture_output=True, text=True, env={"PATH": "/usr/bin", "HOME": str(tmp_path)}
    )
    assert no_token.returncode == 2 and "token" in no_token.stderr


@pytest.mark.slow
@pytest.mark.toolchain
def test_a_running_build_can_be_cancelled(tmp_path, control_factory) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    data, _x, _y = sklearn_mlp(False, hidden=(12,), seed=7)  # a model no other test built: no cache hit
    (folder / "fresh.onnx").write_bytes(data)
    plane = start_control(tmp_path / "data", "--allow-root", str(folder))
    control_factory.append(plane)
    headers = {"authorization": f"Bearer {TOKEN}"}
    with plane.client() as client:
        client.apply(json.dumps(spec("fresh", folder / "fresh.onnx", device={"kind": "sim"})))
        deadline = time.monotonic() + 120
        job = None
        while time.monotonic() < deadline:
            job = client.get("fresh")["job"]
            if job and "sim        start" in client.logs("fresh"):
                break
            time.sleep(0.1)
        assert job is not None
        cancelled = httpx.post(f"{plane.url}/api/v1/jobs/{job}/cancel", headers=headers)
        assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
        failed = plane.wait("fresh", "Failed")
        assert "cancel" in failed["reason"]
        assert "cancelled" in client.logs("fresh")
        assert not list((plane.data / "jobs" / job).glob("bundle")), "a cancelled build leaves no bundle behind"
        assert open_store((plane.data / "store").as_uri()).uri  # the store is untouched by the cancel


def test_the_cli_reports_an_unreachable_control_plane(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gatewright", "get", "--control", "http://127.0.0.1:9", "--token", "x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "cannot reach the control plane at http://127.0.0.1:9" in result.stderr


@pytest.mark.slow
def test_a_registered_agent_adds_its_devices_and_runs_a_deployment(tmp_path, digits: Digits, control_factory) -> None:
    agent_token = "agent-secret-7c1d"
    port = _free_port()
    agent = subprocess.Popen(
        [*GATEWRIGHT, "agent", "--listen", f"127.0.0.1:{port}", "--devices", "emu", "--store", str(tmp_path / "a")],
        env={**os.environ, "GATEWRIGHT_TOKEN": agent_token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        plane = start_control(tmp_path / "data", "--allow-root", str(digits.folder))
        control_factory.append(plane)
        headers = {"authorization": f"Bearer {TOKEN}"}
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # until the agent listens
            wrong = httpx.post(
                f"{plane.url}/api/v1/agents", json={"address": address, "token": "bad-token-x1"}, headers=headers
            )
            if "UNAVAILABLE" not in wrong.text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert wrong.status_code == 400 and "bad-token-x1" not in wrong.json()["error"]
        added = httpx.post(
            f"{plane.url}/api/v1/agents", json={"address": address, "token": agent_token}, headers=headers
        )
        assert added.status_code == 201 and added.json()["devices"] == [f"remote://{address}/emu"]
        listed = httpx.get(f"{plane.url}/api/v1/agents", headers=headers).text
        assert address in listed and agent_token not in listed

        uri = f"remote://{address}/emu"
        with plane.client() as client:
            client.apply(json.dumps(spec("on-agent", digits.model, device={"uri": uri})))
        ready = plane.wait("on-agent")
        assert ready["device"] == uri
        labels = infer_rest(ready["endpoints"]["rest"], digits.x[:16])["label"]
        assert np.mean(labels.ravel() == digits.y[:16]) >= 0.8
        inventory = httpx.get(f"{plane.url}/api/v1/devices", headers=headers).json()["devices"]
        remote = next(d for d in inventory if d["uri"] == uri)
        assert remote["agent"] == address and remote["kind"] == "emu" and remote["deployments"] == ["on-agent"]
        assert agent_token not in plane.log.read_text()
    finally:
        os.killpg(agent.pid, signal.SIGTERM)
        agent.wait(timeout=30)


def test_bench_results_share_the_database_and_a_restart_leaves_bench_jobs_alone(tmp_path, control_factory) -> None:
    from gatewright.control.db import JobRow, open_database
    from tests.bench.conftest import EXAMPLES

    data = tmp_path / "data"
    plane = start_control(data)
    control_factory.append(plane)
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(
        f"""applications:
  small: {{model: {EXAMPLES / "mlp_8-16-3.onnx"}, data: {EXAMPLES / "mlp_8-16-3_test.npy"},
          labels: {EXAMPLES / "mlp_8-16-3_test_labels.npy"}}}
measurements:
  quick: {{warmup_queries: 5, min_queries: 80, min_duration_s: 0.2}}
experiments:
  shared: {{application: small, targets: [cpu], measurements: [quick]}}
"""
    )
    bench = subprocess.run(
        [*GATEWRIGHT, "bench", "run", str(experiment), "--data", str(data)], capture_output=True, text=True, timeout=300
    )
    assert bench.returncode == 0, bench.stderr
    headers = {"authorization": f"Bearer {TOKEN}"}
    runs = httpx.get(f"{plane.url}/api/v1/bench/runs", params={"experiment": "shared"}, headers=headers).json()["runs"]
    assert [(r["target"], r["state"]) for r in runs] == [("cpu", "succeeded")]
    assert runs[0]["metrics"]["accuracy"] > 0.7 and runs[0]["metrics"]["valid"] is True
    assert httpx.get(f"{plane.url}/api/v1/bench/runs").status_code == 401  # the token protects them too
    assert httpx.get(f"{plane.url}/api/v1/bench/runs", headers=headers).json()["runs"][0]["id"] == runs[0]["id"]
    assert httpx.get(f"{plane.url}/api/v1/bench/runs", params={"experiment": "other"}, headers=headers).json() == {
        "runs": []
    }
    jobs = httpx.get(f"{plane.url}/api/v1/jobs", headers=headers).json()["jobs"]
    assert [(j["kind"], j["deployment"], j["state"]) for j in jobs] == [("bench", "bench/shared", "succeeded")]
    # a bench job another process is running survives the control plane's restart untouched
    sessions = open_database(f"sqlite:///{data / 'gatewright.db'}")
    with sessions() as session:
        session.add(
            JobRow(id="benchrunning", deployment="bench/other", generation=1, kind="bench", state="running", request={})
        )
        session.commit()
    plane.stop(signal.SIGKILL)
    again = start_control(data)
    control_factory.append(again)
    with sessions() as session:
        assert session.get(JobRow, "benchrunning").state == "running"
