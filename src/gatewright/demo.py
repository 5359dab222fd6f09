"""The end-to-end demo on embedded defaults (local store, SQLite, simulated device): train a model,
start the control plane, apply a deployment, watch its firmware build, send predictions to the
endpoint it publishes, and print accuracy and latency.

It uses scikit-learn's bundled digits data (no download), runs `gatewright control` as a user would,
drives it through its API (what `gatewright apply / get / logs` do), and prints the CLI command of
each step.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from gatewright import devices
from gatewright.control.client import ControlClient
from gatewright.store import open_store

GATEWRIGHT = [sys.executable, "-m", "gatewright"]
FREE_PORTS = ["--port", "0", "--http-port", "0", "--grpc-port", "0"]
HTTP = httpx.Client(timeout=60.0)  # one client: its connections stay open, as a real client's would


def train_digits_mlp(workdir: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """A 64-32-10 MLP on the digits data, exported by skl2onnx; returns model, calibration, test X and y."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=600, random_state=0).fit(x_train, y_train)
    onnx_model = to_onnx(mlp, x_train[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    model_path = workdir / "digits_mlp.onnx"
    model_path.write_bytes(onnx_model.SerializeToString())
    return model_path, x_train, x_test, y_test


def deployment_spec(name: str, model: Path, calibration: Path | None, **spec: Any) -> dict[str, Any]:
    source: dict[str, Any] = {"uri": model.resolve().as_uri()}
    if calibration is not None:
        source["calibration"] = calibration.resolve().as_uri()
    return {
        "apiVersion": "gatewright/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"model": source, **spec},
    }


def run_demo(workdir: Path, console: Console) -> dict[str, float]:
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    say = lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True)  # noqa: E731

    console.rule("1. train a digits MLP (scikit-learn) and export it to ONNX (skl2onnx)")
    model, x_train, x_test, y_test = train_digits_mlp(workdir)
    calibration = workdir / "calibration.npy"
    np.save(calibration, x_train)
    say(f"model {model}, calibration {calibration} ({len(x_train)} samples), test {len(x_test)} samples")

    console.rule("2. start the control plane (local store, SQLite, the devices of this machine)")
    token = secrets.token_urlsafe(16)
    data = workdir / "control"
    say(f"$ GATEWRIGHT_CONTROL_TOKEN=... gatewright control --data {data} --allow-root {workdir}")
    plane = subprocess.Popen(
        [*GATEWRIGHT, "control", "--data", str(data), "--allow-root", str(workdir), *FREE_PORTS],
        stdout=subprocess.PIPE,
        stderr=(workdir / "control.log").open("w"),
        text=True,
        env={**os.environ, "GATEWRIGHT_CONTROL_TOKEN": token},
        start_new_session=True,
    )
    try:
        assert plane.stdout is not None
        banner = plane.stdout.readline()
        match = re.search(r"control plane on (http://\S+)", banner)
        if not match:
            raise RuntimeError(f"the control plane did not start: {(workdir / 'control.log').read_text()}")
        say(banner.strip())
        with ControlClient(match.group(1), token) as client:
            return _story(client, console, say, workdir, model, calibration, x_test, y_test, data)
    finally:
        plane.send_signal(signal.SIGTERM)
        plane.wait(timeout=60)


def _story(
    client: ControlClient,
    console: Console,
    say: Any,
    workdir: Path,
    model: Path,
    calibration: Path,
    x_test: np.ndarray,
    y_test: np.ndarray,
    data: Path,
) -> dict[str, float]:
    console.rule("3. apply a deployment: the model on an FPGA target, served from the simulated RTL")
    spec_file = workdir / "digits.yaml"
    spec = deployment_spec("digits", model, calibration, engine="fpga", target="generic", device={"kind": "sim"})
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    say(f"$ cat {spec_file}\n{spec_file.read_text().rstrip()}")
    say(f"$ gatewright apply -f {spec_file} --wait")
    client.apply(spec_file.read_text())
    start = time.perf_counter()
    for kind, line in client.follow("digits"):
        if kind == "line":
            say(f"  | {line}")
    status = client.get("digits")
    if status["phase"] != "Ready":
        raise RuntimeError(f"the deployment failed: {status['reason']}")
    say(f"digits is Ready after {time.perf_counter() - start:.1f} s on device {status['device']}")

    console.rule("4. the same model on the CPU (engine onnx), as the float reference")
    reference = deployment_spec("digits-cpu", model, None, engine="onnx")
    say("$ gatewright apply -f digits-cpu.yaml --wait")
    client.apply(json.dumps(reference))
    client.wait("digits-cpu")
    say("$ gatewright get")
    table = Table(box=None)
    for column in ("NAME", "ENGINE", "PHASE", "DEVICE", "REST", "GRPC"):
        table.add_column(column)
    statuses = {s["name"]: s for s in client.list()}
    for s in statuses.values():
        table.add_row(
            s["name"],
            s["spec"]["spec"]["engine"],
            s["phase"],
            s["device"],
            s["endpoints"].get("rest", "-"),
            s["endpoints"].get("grpc", "-"),
        )
    console.print(table)

    console.rule("5. predictions from the endpoints (Open Inference Protocol v2, REST and gRPC)")
    results: dict[str, dict[str, float]] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for name, s in statuses.items():
        endpoints = s["endpoints"]
        outputs[name] = _predict_all(endpoints["rest"], x_test)
        rest = _latencies(lambda i, e=endpoints: _rest_infer(e["rest"], x_test[i : i + 1]), len(x_test))
        grpc = _latencies(_grpc_caller(endpoints["grpc"], name, x_test), len(x_test))
        accuracy = float(np.mean(outputs[name]["label"].ravel() == y_test))
        results[name] = {"accuracy": accuracy, "rest_p50_ms": rest[0], "rest_p99_ms": rest[1], "grpc_p50_ms": grpc[0]}
    say(f"$ curl -X POST {statuses['digits']['endpoints']['rest']}/infer -d @request.json   (one digit per request)")
    table = Table(title=f"{len(x_test)} unseen test digits, one request per digit for the latencies")
    for column in ("deployment", "device", "accuracy", "REST p50", "REST p99", "gRPC p50"):
        table.add_column(column, justify="right" if column != "deployment" else "left")
    for name, r in results.items():
        table.add_row(
            name,
            statuses[name]["device"],
            f"{r['accuracy']:.2%}",
            f"{r['rest_p50_ms']:.2f} ms",
            f"{r['rest_p99_ms']:.2f} ms",
            f"{r['grpc_p50_ms']:.2f} ms",
        )
    console.print(table)

    console.rule("6. the firmware in the store, checked bit-exact against the integer emulator")
    key = statuses["digits"]["bundle"]
    bundle = open_store((data / "store").as_uri()).get_bundle(key, workdir / "digits_mlp.bundle")
    say(f"$ gatewright pull {(data / 'store').as_uri()}/bundles/{key}.tar --out {bundle.path}")
    with devices.open("emu") as emu:
        expected = emu.load(bundle).infer({"X": x_test})
    # JSON carries each float32 in its shortest form, which reads back as exactly that float32
    identical = all(np.array_equal(outputs["digits"][n].astype(expected[n].dtype), expected[n]) for n in expected)
    agreement = float(np.mean(outputs["digits"]["label"].ravel() == outputs["digits-cpu"]["label"].ravel()))
    console.rule("7. summary")
    say(
        f"served from the simulated RTL: accuracy {results['digits']['accuracy']:.2%} "
        f"(float model on the CPU: {results['digits-cpu']['accuracy']:.2%}), label agreement {agreement:.2%}; "
        f"REST p50 {results['digits']['rest_p50_ms']:.2f} ms; "
        "endpoint against emulator: " + ("identical on every output" if identical else "DIFFERENT (a bug: report it)")
    )
    say(f"the control plane's state, store and logs are in {data} (`gatewright control --data {data}` resumes it)")
    return {
        "accuracy": results["digits"]["accuracy"],
        "cpu_accuracy": results["digits-cpu"]["accuracy"],
        "agreement": agreement,
        "identical": float(identical),
        "rest_p50_ms": results["digits"]["rest_p50_ms"],
    }


def _predict_all(endpoint: str, x: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Every sample, in requests of ``batch`` (the server's default largest batch)."""
    parts = [_rest_infer(endpoint, x[i : i + batch]) for i in range(0, len(x), batch)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _rest_infer(endpoint: str, x: np.ndarray) -> dict[str, np.ndarray]:
    body = {"inputs": [{"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    answer = HTTP.post(f"{endpoint}/infer", json=body)
    answer.raise_for_status()
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]}


def _grpc_caller(address: str, name: str, x: np.ndarray) -> Any:
    import grpc

    from gatewright.serve import inference_pb2 as pb
    from gatewright.serve import inference_pb2_grpc as pb_grpc

    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))

    def call(i: int) -> None:
        tensor = pb.ModelInferRequest.InferInputTensor(name="X", datatype="FP32", shape=[1, x.shape[1]])
        request = pb.ModelInferRequest(model_name=name, inputs=[tensor], raw_input_contents=[x[i].tobytes()])
        stub.ModelInfer(request, timeout=60)

    return call


def _latencies(call: Any, count: int) -> tuple[float, float]:
    """p50 and p99 in ms of ``call(i)`` over ``count`` sequential requests (after a few warm-up calls)."""
    for i in range(5):
        call(i)
    times = []
    for i in range(count):
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))
