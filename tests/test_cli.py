"""The CLI as a user runs it: the installed `gatewright` script in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import onnx_models as om
from tests.model.test_errors import lstm_in_the_middle

GATEWRIGHT = str(Path(sys.executable).parent / "gatewright")


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GATEWRIGHT, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def digits(tmp_path: Path, sklearn_digits: dict) -> tuple[Path, Path, np.ndarray]:
    model, x, _ = sklearn_digits[False]
    (tmp_path / "digits.onnx").write_bytes(model)
    np.save(tmp_path / "calib.npy", x[:800])
    return tmp_path / "digits.onnx", tmp_path / "calib.npy", x


def test_inspect_shows_layers_macs_and_split(digits) -> None:
    result = run("inspect", digits[0])
    assert result.returncode == 0, result.stderr
    assert "input X: float32 [?, 64]" in result.stdout
    assert "output probabilities: float32 [?, 10]" in result.stdout
    assert "64 -> 16" in result.stdout and "1,024" in result.stdout
    assert "Split: hardware X -> add_result1 (64 -> 10, 1,184 MACs per sample" in result.stdout
    assert "host: Relu1, Identity, ArgMax, ArrayFeatureExtractor, Reshape, Cast1" in result.stdout


def test_build_then_predict_emu_and_cpu(tmp_path: Path, digits) -> None:
    model, calib, x = digits
    bundle = tmp_path / "digits.bundle"
    result = run(
        "build",
        model,
        "--target",
        "generic",
        "--until",
        "quantize",
        "--out",
        bundle,
        "--calibration",
        calib,
        "--bits",
        "8",
        "--bits",
        "activation=16",
    )
    assert result.returncode == 0, result.stderr
    assert "quantize   start" in result.stderr and "quantize   done" in result.stderr
    assert "top-1 agreement with the float model" in result.stdout
    assert (bundle / "manifest.json").is_file()

    np.save(tmp_path / "fresh.npy", x[1200:])
    outputs = {}
    for device in ("emu", "cpu"):
        out = tmp_path / f"{device}.npz"
        result = run("predict", bundle, "--device", device, "--input", tmp_path / "fresh.npy", "--output", out)
        assert result.returncode == 0, result.stderr
        with np.load(out) as data:
            assert data.files == ["label", "probabilities"]
            outputs[device] = {k: data[k] for k in data.files}
    assert outputs["emu"]["probabilities"].shape == (len(x) - 1200, 10)
    assert np.mean(outputs["emu"]["label"] == outputs["cpu"]["label"]) >= 0.99
    assert not np.array_equal(outputs["emu"]["probabilities"], outputs["cpu"]["probabilities"])  # really quantized


def test_predict_single_output_npy_and_zipmap_npz(tmp_path: Path, sklearn_digits: dict) -> None:
    single = tmp_path / "mlp.onnx"
    single.write_bytes(om.pytorch_mlp([8, 16, 4]))
    x = om.rng(0).normal(size=(5, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run("predict", single, "--device", "cpu", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), om.run_ort(single.read_bytes(), {"input": x})["output"])

    zipmap, digits_x, _ = sklearn_digits[True]
    (tmp_path / "zm.onnx").write_bytes(zipmap)
    np.save(tmp_path / "d.npy", digits_x[:7])
    result = run(
        "predict",
        tmp_path / "zm.onnx",
        "--device",
        "emu",
        "--input",
        tmp_path / "d.npy",
        "--output",
        tmp_path / "zm.npz",
    )
    assert result.returncode == 0, result.stderr
    assert "no calibration data" in result.stderr
    with np.load(tmp_path / "zm.npz") as data:  # loads without pickle
        probabilities = data["output_probability"]
        assert probabilities.shape == (7,) and probabilities.dtype.names == tuple(str(i) for i in range(10))
        sums = sum(probabilities[name] for name in probabilities.dtype.names)
        np.testing.assert_allclose(sums, 1.0, rtol=1e-5)


@pytest.mark.parametrize("content", [b"", b"garbage that is not protobuf \x00\xff" * 3, "truncated"])
def test_bad_model_files_give_one_line_and_exit_2(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "model.onnx"
    if content == "truncated":
        data = om.pytorch_mlp([8, 16, 4])
        path.write_bytes(data[: len(data) - 40])
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    for args in (["inspect", path], ["build", path, "--until", "quantize", "--out", tmp_path / "b"]):
        result = run(*args)
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: {path}: ")
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()


def test_unsupported_operator_error_from_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "odd.onnx"
    path.write_bytes(lstm_in_the_middle())
    result = run("build", path)
    assert result.returncode == 2
    assert "node 'weird_1' (Sin, position 1) cannot run on the FPGA" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bits", "weight=eleven"], "'eleven' is not a fixed-point format"),
        (["--bits", "nolayer.weight=4"], "unknown layer(s) nolayer"),
        (["--target", "ecp9"], "unknown target 'ecp9'"),
        (["--until", "pnr"], "target generic is RTL and simulation only"),
        (["--until", "placing"], "unknown step 'placing'"),
        (["--arch", "systolic"], "unknown architecture 'systolic'"),
        (["--calibration", "missing.npy"], "no such calibration file"),
        (["--precision", "missing.yaml"], "cannot read the precision file"),
    ],
)
def test_bad_build_options(tmp_path: Path, args: list[str], message: str) -> None:
    path = tmp_path / "mlp.onnx"
    path.write_bytes(om.pytorch_mlp([8, 16, 4]))
    result = run("build", path, "--out", tmp_path / "b", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()


def test_bad_predict_arguments(tmp_path: Path, digits) -> None:
    model, _, x = digits
    np.save(tmp_path / "wrong.npy", x[:, :10])
    cases = [
        (["--input", tmp_path / "wrong.npy", "--output", tmp_path / "o.npz"], "input 'X' has shape [1797, 10]"),
        (["--input", tmp_path / "none.npy", "--output", tmp_path / "o.npz"], "no such file"),
        (["--input", model, "--output", tmp_path / "o.npz"], "not a NumPy .npy/.npz file"),
        (["--input", tmp_path / "wrong.npy", "--output", tmp_path / "o.csv"], "use a .npz file"),
        (
            ["--device", "gpu", "--input", tmp_path / "wrong.npy", "--output", tmp_path / "o.npz"],
            "unknown device 'gpu'",
        ),
    ]
    for args, message in cases:
        result = run("predict", model, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    np.save(tmp_path / "ok.npy", x[:3])
    result = run("predict", model, "--device", "cpu", "--input", tmp_path / "ok.npy", "--output", tmp_path / "o.npy")
    assert result.returncode == 2 and "has outputs label, probabilities; use an .npz file" in result.stderr
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "o.npy").exists()


def test_devices_and_version() -> None:
    result = run("devices")
    assert result.returncode == 0 and "emu" in result.stdout and "cpu" in result.stdout
    assert run("--version").stdout.startswith("gatewright ")


def test_usage_error_exits_2_without_traceback() -> None:
    result = run("build")
    assert result.returncode == 2 and "Missing argument" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.toolchain
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = run("demo", "--workdir", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # the whole story: a control plane, a deployment built (its log streamed), served, measured
    assert "control plane on http://127.0.0.1:" in out
    assert "quantize   start" in out or "build      cached" in out
    assert "bit-exact in simulation on 64 golden vectors, 1257 calibration data" in out
    assert "digits is Ready after" in out and "on device sim" in out
    assert "endpoint against emulator: identical on every output" in out
    summary = out.split("served from the simulated RTL: accuracy ")[1]
    accuracy, reference = float(summary.split("%")[0]), float(summary.split("on the CPU: ")[1].split("%")[0])
    agreement = float(summary.split("label agreement ")[1].split("%")[0])
    assert accuracy >= 95.0 and reference >= 95.0 and agreement >= 99.0
    assert float(summary.split("REST p50 ")[1].split(" ms")[0]) > 0
    assert (tmp_path / "demo" / "control" / "gatewright.db").is_file()
    assert list((tmp_path / "demo" / "control" / "store" / "bundles").glob("*.tar"))


def test_unwritable_outputs_and_odd_inputs_exit_2(tmp_path: Path) -> None:
    model = tmp_path / "mlp.onnx"
    model.write_bytes(om.pytorch_mlp([8, 16, 4]))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    np.save(tmp_path / "x.npy", np.zeros((2, 8), np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, 8), np.float32))
    np.savez(tmp_path / "objects.npz", input=np.array([{"a": 1}, None], dtype=object))
    cases = [
        (["build", model, "--out", blocker / "b"], "cannot create the bundle there"),
        (
            ["predict", model, "--device", "cpu", "--input", tmp_path / "x.npy", "--output", blocker / "o.npy"],
            "cannot write there",
        ),
        (
            ["predict", model, "--device", "emu", "--input", tmp_path / "empty.npy", "--output", tmp_path / "o.npy"],
            "holds no samples",
        ),
        (
            ["predict", model, "--device", "emu", "--input", tmp_path / "objects.npz", "--output", tmp_path / "o.npy"],
            "not a NumPy .npy/.npz file of numbers",
        ),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)


def test_a_model_without_a_hardware_part_is_shown_explained_and_still_runs_on_cpu(tmp_path: Path) -> None:
    """scikit-learn's LogisticRegression exports as LinearClassifier (ai.onnx.ml): no FPGA mapping."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    model = tmp_path / "logreg.onnx"
    model.write_bytes(to_onnx(LogisticRegression(max_iter=500).fit(x, y), x[:1]).SerializeToString())
    result = run("inspect", model)
    assert result.returncode == 2
    assert "LinearClassifier" in result.stdout and "ZipMap" in result.stdout  # the node table
    assert (
        "node 'LinearClassifier' (LinearClassifier, position 0) cannot run on the FPGA: LinearClassifier has no "
        "hardware mapping" in result.stderr
    )
    np.save(tmp_path / "x.npy", x)
    result = run("predict", model, "--device", "cpu", "--input", tmp_path / "x.npy", "--output", tmp_path / "o.npz")
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "o.npz") as data:
        assert np.mean(data["output_label"] == y) > 0.9


def test_precision_file_end_to_end(tmp_path: Path, digits) -> None:
    model, calib, _ = digits
    precision = tmp_path / "p.yaml"
    precision.write_text("defaults:\n  weight: 6\nlayers:\n  MatMul1:\n    weight: fixed<10,2>\n    activation: 12\n")
    result = run(
        "build", model, "--calibration", calib, "--precision", precision, "--until", "quantize", "--out", tmp_path / "b"
    )
    assert result.returncode == 0, result.stderr
    import json

    formats = json.loads((tmp_path / "b" / "manifest.json").read_text())["quantization"]["formats"]
    assert formats["MatMul.weight"].startswith("fixed<6,")
    assert formats["MatMul1.weight"] == "fixed<10,2>"
    assert formats["MatMul1.activation"].startswith("fixed<12,")
