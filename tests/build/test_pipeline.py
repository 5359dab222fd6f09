"""The quantize step writes a complete bundle atomically; golden vectors reproduce on emu."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from gatewright import devices
from gatewright.build.bundle import Bundle
from gatewright.build.pipeline import build as full_build
from gatewright.errors import BundleError, GatewrightError, InputDataError
from gatewright.quant import PrecisionConfig, QuantizedModel
from tests import onnx_models as om

# these tests are about the quantize step; tests/build/test_hardware_build.py covers the rest
build = functools.partial(full_build, until="quantize", use_cache=False)


@pytest.fixture
def digits_files(tmp_path: Path, sklearn_digits: dict) -> tuple[Path, Path, np.ndarray]:
    model, x, _ = sklearn_digits[False]
    model_path = tmp_path / "digits.onnx"
    model_path.write_bytes(model)
    calib = tmp_path / "calib.npy"
    np.save(calib, x[:600])
    return model_path, calib, x


def test_bundle_holds_every_part_with_a_complete_manifest(tmp_path: Path, digits_files) -> None:
    model_path, calib, _ = digits_files
    bundle, report = build(model_path, tmp_path / "out", calibration=calib)
    names = {p.name for p in bundle.path.iterdir()}
    assert names == {
        "manifest.json",
        "model.onnx",
        "host.onnx",
        "quantized.json",
        "quantization.json",
        "golden.npz",
        "build.log",
    }
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["model"]["sha256"] == __import__("hashlib").sha256(model_path.read_bytes()).hexdigest()
    assert (bundle.path / "model.onnx").read_bytes() == model_path.read_bytes()
    assert manifest["target"] == "generic"
    assert [o["name"] for o in manifest["outputs"]] == ["label", "probabilities"]
    assert manifest["outputs"][1] == {"name": "probabilities", "dtype": "float32", "shape": [None, 10]}
    assert manifest["split"]["hardware"]["output"] == "add_result1"
    assert "Softmax" not in manifest["split"]["hardware"]["nodes"]
    assert manifest["quantization"]["calibration"]["samples"] == 600
    assert manifest["quantization"]["formats"]["MatMul.weight"].startswith("fixed<8,")
    assert [s["name"] for s in manifest["steps"]] == ["quantize"] and manifest["steps"][0]["duration_s"] >= 0
    assert set(manifest["tools"]) == {"python", "numpy", "onnx", "onnxruntime"}
    assert len(manifest["cache_key"]) == 64
    assert report.top1_agreement is not None and report.top1_agreement >= 0.99
    assert report.outputs["label"]["agreement"] >= 0.99
    log = (bundle.path / "build.log").read_text()
    assert " quantize   start  calibrate + quantize" in log and " quantize   done " in log


def test_golden_vectors_reproduce_on_the_emulator(tmp_path: Path, digits_files) -> None:
    model_path, calib, _ = digits_files
    bundle, _ = build(model_path, tmp_path / "out", calibration=calib)
    golden = bundle.golden()
    assert golden["input.X"].shape == (64, 64)
    np.testing.assert_array_equal(golden["input.X"], np.load(calib)[:64])
    with devices.open("emu") as dev:
        outputs = dev.load(bundle).infer({"X": golden["input.X"]})
    np.testing.assert_array_equal(outputs["label"], golden["output.label"])
    np.testing.assert_array_equal(outputs["probabilities"], golden["output.probabilities"])
    quantized = QuantizedModel.load(bundle.path / "quantized.json")
    from gatewright.quant import Emulator

    emulator = Emulator(quantized)
    np.testing.assert_array_equal(emulator.quantize_input(golden["input.X"]), golden["hw.input_raw"])
    np.testing.assert_array_equal(emulator.run_raw(golden["hw.input_raw"]), golden["hw.output_raw"])


def test_without_calibration_the_log_says_so_and_golden_inputs_are_seeded_noise(tmp_path: Path) -> None:
    model_path = tmp_path / "mlp.onnx"
    model_path.write_bytes(om.pytorch_mlp([8, 16, 4]))
    lines: list[str] = []
    bundle, report = build(model_path, tmp_path / "b", echo=lines.append)
    assert any("no calibration data" in line for line in lines)
    assert not report.calibrated and bundle.manifest["quantization"]["calibration"] is None
    assert bundle.manifest["golden"]["source"] == "64 samples of normal(0, 1) noise, seed 0"
    again, _ = build(model_path, tmp_path / "c")
    np.testing.assert_array_equal(bundle.golden()["input.input"], again.golden()["input.input"])


def test_rebuild_replaces_a_bundle_but_never_other_directories(tmp_path: Path) -> None:
    model_path = tmp_path / "mlp.onnx"
    model_path.write_bytes(om.pytorch_mlp([8, 16, 4]))
    out = tmp_path / "bundle"
    build(model_path, out)
    first = (out / "manifest.json").read_text()
    build(model_path, out, precision=PrecisionConfig.build(bits=["6"]))
    assert (out / "manifest.json").read_text() != first
    assert QuantizedModel.load(out / "quantized.json").layers[0].weight_format.bits == 6  # type: ignore[union-attr]
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(BundleError, match="exists and is not a firmware bundle"):
        build(model_path, other)
    assert [p.name for p in other.iterdir()] == ["cat.jpg"]


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    model_path = tmp_path / "mlp.onnx"
    model_path.write_bytes(om.pytorch_mlp([8, 16, 4]))
    calib = tmp_path / "calib.npy"
    np.save(calib, np.zeros((10, 5)))  # wrong width
    with pytest.raises(InputDataError, match="does not fit input 'input'"):
        build(model_path, tmp_path / "out", calibration=calib)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npy", "mlp.onnx"]


def test_unknown_target_and_step(tmp_path: Path) -> None:
    model_path = tmp_path / "mlp.onnx"
    model_path.write_bytes(om.pytorch_mlp([8, 16, 4]))
    with pytest.raises(GatewrightError, match="unknown target 'ecp6'; choose one of ecp5-25k"):
        build(model_path, tmp_path / "out", target="ecp6")
    with pytest.raises(GatewrightError, match="unknown step 'synthesis'; the steps are: quantize, rtl, sim, synth"):
        build(model_path, tmp_path / "out", until="synthesis")
    with pytest.raises(GatewrightError, match="target generic is RTL and simulation only"):
        build(model_path, tmp_path / "out", until="pnr")


def test_fixed_batch_model_builds_and_runs_in_slices(tmp_path: Path) -> None:
    model_path = tmp_path / "b1.onnx"
    model_path.write_bytes(om.pytorch_mlp([4, 8, 3], batch=1, softmax=True))
    calib = tmp_path / "calib.npy"
    np.save(calib, om.rng(0).normal(size=(50, 4)).astype(np.float32))
    bundle, report = build(model_path, tmp_path / "out", calibration=calib)
    assert bundle.golden()["input.input"].shape == (1, 4)
    assert report.samples == 50
    x = om.rng(1).normal(size=(6, 4)).astype(np.float32)
    with devices.open("emu") as emu, devices.open("cpu") as cpu:
        got = emu.load(bundle).infer({"input": x})["output"]
        want = cpu.load(bundle).infer({"input": x})["output"]
    assert got.shape == want.shape == (6, 3)
    assert np.max(np.abs(got - want)) < 0.02


def test_damaged_bundles_are_explained(tmp_path: Path) -> None:
    model_path = tmp_path / "mlp.onnx"
    model_path.write_bytes(om.pytorch_mlp([8, 16, 4]))
    bundle, _ = build(model_path, tmp_path / "b")
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    del manifest["split"]
    (bundle.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="the manifest lacks split; rebuild the bundle"):
        Bundle(bundle.path)
    (bundle.path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        Bundle(bundle.path)
    with pytest.raises(BundleError, match="not a firmware bundle"):
        Bundle(tmp_path)


def test_a_bundle_with_a_damaged_split_is_explained(tmp_path: Path) -> None:
    model_path = tmp_path / "mlp.onnx"
    model_path.write_bytes(om.pytorch_mlp([8, 16, 4]))
    bundle, _ = build(model_path, tmp_path / "b")
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    manifest["split"] = {}
    (bundle.path / "manifest.json").write_text(json.dumps(manifest))
    with devices.open("emu") as emu, pytest.raises(BundleError, match="the bundle is damaged"):
        emu.load(bundle.path)
