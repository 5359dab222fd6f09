"""Device registry and the emu / cpu backends through the device API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gatewright import devices
from gatewright.build.pipeline import build
from gatewright.errors import DeviceError, InputDataError
from tests import onnx_models as om


def test_registry_lists_emu_and_cpu_and_respects_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = {info.kind for info in devices.list()}
    assert {"emu", "cpu"} <= kinds
    monkeypatch.setenv("GATEWRIGHT_DEVICES", "cpu")
    assert [info.kind for info in devices.list()] == ["cpu"]
    with pytest.raises(DeviceError, match=r"unknown device 'emu'; available here: cpu \(restricted by GATEWRIGHT"):
        devices.open("emu")


def test_unknown_device() -> None:
    with pytest.raises(DeviceError, match="unknown device 'fpga0'"):
        devices.open("fpga0")


@pytest.fixture
def bundle_dir(tmp_path: Path, sklearn_digits: dict) -> Path:
    model, x, _ = sklearn_digits[True]  # ZipMap enabled: a sequence-of-maps output
    (tmp_path / "m.onnx").write_bytes(model)
    np.save(tmp_path / "calib.npy", x[:500])
    build(tmp_path / "m.onnx", tmp_path / "bundle", calibration=tmp_path / "calib.npy")
    return tmp_path / "bundle"


def test_emu_and_cpu_agree_on_a_zipmap_classifier(bundle_dir: Path, sklearn_digits: dict) -> None:
    _, x, _ = sklearn_digits[True]
    fresh = x[1200:]
    with devices.open("emu") as emu, devices.open("cpu") as cpu:
        got = emu.load(bundle_dir).infer({"X": fresh})
        want = cpu.load(bundle_dir).infer({"X": fresh})
    assert list(got) == ["output_label", "output_probability"]
    assert got["output_label"].dtype == np.int64
    assert isinstance(got["output_probability"], list) and set(got["output_probability"][0]) == set(range(10))
    assert np.mean(got["output_label"] == want["output_label"]) >= 0.99


def test_inputs_are_checked_with_clear_errors(bundle_dir: Path) -> None:
    with devices.open("emu") as emu:
        model = emu.load(bundle_dir)
        with pytest.raises(InputDataError, match=r"missing input\(s\) 'X'; unknown input\(s\) 'x'"):
            model.infer({"x": np.zeros((1, 64), np.float32)})
        with pytest.raises(InputDataError, match=r"input 'X' has shape \[2, 63\]; the model expects \[\?, 64\]"):
            model.infer({"X": np.zeros((2, 63), np.float32)})
        with pytest.raises(InputDataError, match=r"input 'X' has shape \[64\]"):
            model.infer({"X": np.zeros(64, np.float32)})
        with pytest.raises(InputDataError, match="input 'X' is <U1; the model expects float32"):
            model.infer({"X": np.array([["a"] * 64])})
        with pytest.raises(InputDataError, match="NaN"):
            model.infer({"X": np.full((1, 64), np.nan, np.float32)})
        # float64 input is cast to the declared float32, and the model still answers
        assert model.infer({"X": np.zeros((3, 64))})["output_label"].shape == (3,)


def test_cpu_runs_models_the_hardware_cannot(tmp_path: Path) -> None:
    from onnx import helper

    nodes = [helper.make_node("Sin", ["input"], ["output"], name="sin")]
    path = tmp_path / "sin.onnx"
    path.write_bytes(om.make_model(nodes, {}, ["N", 3], "output", ["N", 3]))
    x = np.array([[0.0, 1.0, 2.0]], np.float32)
    with devices.open("cpu") as cpu:
        np.testing.assert_allclose(cpu.load(path).infer({"input": x})["output"], np.sin(x), rtol=1e-6)


def test_emu_quantizes_a_plain_model_with_defaults(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "mlp.onnx"
    path.write_bytes(om.pytorch_mlp([8, 16, 4]))
    x = om.rng(0).normal(size=(20, 8)).astype(np.float32)
    with devices.open("emu") as emu:
        got = emu.load(path).infer({"input": x})["output"]
    assert "no calibration data" in caplog.text
    assert got.shape == (20, 4) and np.max(np.abs(got - om.run_ort(path.read_bytes(), {"input": x})["output"])) < 0.05


def test_closed_device_and_missing_source(tmp_path: Path) -> None:
    device = devices.open("emu")
    with pytest.raises(DeviceError, match="no such bundle directory or model file"):
        device.load(tmp_path / "nothing")
    device.close()
    with pytest.raises(DeviceError, match="is closed"):
        device.load(tmp_path)


def test_binary_classifier_with_a_sigmoid_host_part(tmp_path: Path) -> None:
    """A two-class MLP ends in one logit; the host part turns it into two probabilities and a label."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0))
        pipe.fit(x[:400], y[:400])
    (tmp_path / "bc.onnx").write_bytes(to_onnx(pipe, x[:1], options={"zipmap": False}).SerializeToString())
    np.save(tmp_path / "calib.npy", x[:400])
    build(tmp_path / "bc.onnx", tmp_path / "bundle", calibration=tmp_path / "calib.npy")
    with devices.open("emu") as emu, devices.open("cpu") as cpu:
        got = emu.load(tmp_path / "bundle").infer({"X": x[400:]})
        want = cpu.load(tmp_path / "bundle").infer({"X": x[400:]})
    assert got["probabilities"].shape == (len(x) - 400, 2)
    assert np.mean(got["label"] == want["label"]) >= 0.99
    assert np.median(np.abs(got["probabilities"] - want["probabilities"])) < 0.01
