"""The end-to-end demo on embedded defaults: train, export, quantize, generate and simulate the
hardware bit-exact, then run it on the simulated RTL, the emulator and the CPU and compare.

It uses scikit-learn's bundled digits data (no download) and only gatewright's public pieces, and
prints the CLI command that does each step.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console

from gatewright import devices
from gatewright.build.pipeline import build


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


def run_demo(workdir: Path, console: Console) -> dict[str, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    from gatewright.cli import print_report, print_results, write_outputs  # the demo prints and saves as the CLI does

    console.rule("1. train a digits MLP (scikit-learn) and export it to ONNX (skl2onnx)")
    model_path, x_train, x_test, y_test = train_digits_mlp(workdir)
    calibration = workdir / "calibration.npy"
    np.save(calibration, x_train)
    np.save(workdir / "test_inputs.npy", x_test)
    console.print(f"model {model_path}, calibration {calibration} ({len(x_train)} samples), test {len(x_test)} samples")

    bundle_dir = workdir / "digits_mlp.bundle"
    console.rule("2. quantize to fixed point, generate the RTL, prove it bit-exact in simulation (Verilator)")
    console.print(f"$ gatewright build {model_path} --target generic --calibration {calibration} --out {bundle_dir}")
    bundle, report = build(
        model_path,
        bundle_dir,
        calibration=calibration,
        echo=lambda line: console.print(line, highlight=False, markup=False),
    )
    if report is not None:
        print_report(report)
    print_results(bundle)

    console.rule("3. predict on the simulated RTL, the emulator (bit-exact integer model) and the CPU (float)")
    results: dict[str, dict[str, np.ndarray]] = {}
    for kind in ("sim", "emu", "cpu"):
        console.print(
            f"$ gatewright predict {bundle_dir} --device {kind} --input {workdir}/test_inputs.npy "
            f"--output {workdir}/{kind}.npz"
        )
        with devices.open(kind) as device:
            model = device.load(bundle)
            model.infer({"X": x_test[:1]})  # warm up: the first call builds onnxruntime's kernels
            start = time.perf_counter()
            results[kind] = model.infer({"X": x_test})
            elapsed = time.perf_counter() - start
        write_outputs(workdir / f"{kind}.npz", results[kind])
        accuracy = float(np.mean(results[kind]["label"] == y_test))
        console.print(
            f"{kind}: accuracy {accuracy:.2%} on {len(x_test)} test digits, "
            f"{elapsed * 1e3:.2f} ms for the batch ({len(x_test) / elapsed:,.0f} samples/s)"
        )
    console.rule("4. the simulated RTL again, on another 'machine': a gatewright agent on loopback")
    remote_identical = _through_agent(console, workdir, bundle_dir, x_test, results["sim"])
    identical = all(np.array_equal(results["sim"][name], results["emu"][name]) for name in results["emu"])
    agreement = float(np.mean(results["emu"]["label"] == results["cpu"]["label"]))
    error = float(np.max(np.abs(results["emu"]["probabilities"] - results["cpu"]["probabilities"])))
    console.rule("5. summary")
    console.print(
        f"sim against emu: {'identical on every output' if identical else 'DIFFERENT (a bug: please report it)'}; "
        f"sim through the agent: {'identical' if remote_identical else 'DIFFERENT (a bug: please report it)'}; "
        f"emu against cpu on unseen data: label agreement {agreement:.2%}, max |probability error| {error:.4f}"
    )
    return {
        "agreement": agreement,
        "max_probability_error": error,
        "sim_identical": float(identical),
        "remote_identical": float(remote_identical),
    }


def _through_agent(
    console: Console, workdir: Path, bundle_dir: Path, x: np.ndarray, local: dict[str, np.ndarray]
) -> bool:
    """Serve the sim device with an agent (as `gatewright agent` does), run the bundle through it."""
    import secrets

    from gatewright.agent.server import serve

    token = secrets.token_urlsafe()
    server, service, port = serve("127.0.0.1:0", ["sim"], [token], workdir / "agent-store")
    try:
        uri = f"remote://127.0.0.1:{port}/sim"
        console.print(f"$ gatewright agent --listen 127.0.0.1:{port} --devices sim   (token in GATEWRIGHT_TOKEN)")
        console.print(f"$ gatewright predict {bundle_dir} --device {uri} --input {workdir}/test_inputs.npy ...")
        with devices.open(uri, token=token) as device:
            model = device.load(bundle_dir)  # uploaded by content hash, loaded in this client's session
            start = time.perf_counter()
            remote = model.infer({"X": x})
            elapsed = time.perf_counter() - start
        console.print(f"remote sim: {elapsed * 1e3:.2f} ms for the batch of {len(x)}, the network included")
    finally:
        server.stop(grace=None)
        service.close()
    return all(np.array_equal(remote[name], local[name]) for name in local)
