"""The hardware steps end to end: every exporter style the intake accepts simulates bit-exact,
the sim device answers exactly as emu, a tiny model goes all the way to a bitstream, identical
requests come from the cache, and a failing step publishes nothing but keeps its logs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gatewright import devices
from gatewright.build.bundle import Bundle
from gatewright.build.hardware import HardwareOptions
from gatewright.build.pipeline import build
from gatewright.cli import app
from gatewright.errors import GatewrightError
from gatewright.hw.plan import FitError
from tests import onnx_models as om

pytestmark = [pytest.mark.toolchain, pytest.mark.slow]


def _models(sklearn_digits: dict) -> dict[str, tuple[bytes, np.ndarray]]:
    r = np.random.default_rng(5)
    digits, x, _ = sklearn_digits[True]  # ZipMap: label and a seq(map) of probabilities on the host
    return {
        "pytorch Gemm transB + relu": (om.pytorch_mlp([6, 8, 3]), r.normal(0, 1, (200, 6)).astype(np.float32)),
        "pytorch leaky relu, folded": (
            om.pytorch_mlp([5, 7, 6, 2], activation="leaky"),
            r.normal(0, 1.5, (200, 5)).astype(np.float32),
        ),
        "keras MatMul + Add + BatchNorm": (om.keras_mlp([4, 6, 5, 3]), r.normal(0, 1, (200, 4)).astype(np.float32)),
        "skl2onnx digits with host outputs": (digits, x[:300]),
    }


@pytest.mark.parametrize(
    "style",
    [
        "pytorch Gemm transB + relu",
        "pytorch leaky relu, folded",
        "keras MatMul + Add + BatchNorm",
        "skl2onnx digits with host outputs",
    ],
)
def test_exporter_styles_simulate_bit_exact_and_sim_matches_emu(
    style: str, tmp_path: Path, sklearn_digits: dict
) -> None:
    model, data = _models(sklearn_digits)[style]
    model_path, calib = tmp_path / "model.onnx", tmp_path / "calib.npy"
    model_path.write_bytes(model)
    np.save(calib, data)
    arch = "folded" if "leaky" in style else "auto"  # one style through the folded architecture too
    bundle, _ = build(model_path, tmp_path / "b", until="sim", calibration=calib, hardware=HardwareOptions(arch))
    results = bundle.manifest["results"]
    assert results["simulation"]["bit_exact"] is True
    assert results["simulation"]["vectors"] == {"golden vectors": 64, "calibration data": len(data)}
    stages = bundle.manifest["architecture"]["stages"]
    assert {s["arch"] for s in stages} == ({"folded"} if arch == "folded" else {"unrolled"})
    assert [s["name"] for s in bundle.manifest["steps"]] == ["quantize", "rtl", "sim"]
    assert (bundle.path / "rtl" / "gw_core.v").is_file() and (bundle.path / "rtl" / "gw_top.v").is_file()

    name = bundle.inputs[0].name
    feeds = {name: data[:50]}
    with devices.open("emu") as emu, devices.open("sim") as simulated:
        expected = emu.load(bundle).infer(feeds)
        got = simulated.load(bundle).infer(feeds)
    assert list(got) == list(expected)
    for key in expected:
        if isinstance(expected[key], list):  # ZipMap's seq(map): the same floats under the same keys
            assert got[key] == expected[key]
        else:
            assert got[key].dtype == expected[key].dtype
            np.testing.assert_array_equal(got[key], expected[key])


def test_tiny_model_to_an_ecp5_bitstream_then_from_the_cache(tmp_path: Path) -> None:
    model_path = tmp_path / "tiny.onnx"
    model_path.write_bytes(om.pytorch_mlp([3, 4, 2]))
    runner = CliRunner()
    args = ["build", str(model_path), "--target", "ecp5-25k", "--out", str(tmp_path / "tiny.bundle")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    bundle = Bundle(tmp_path / "tiny.bundle")
    manifest = bundle.manifest
    assert [s["name"] for s in manifest["steps"]] == ["quantize", "rtl", "sim", "synth", "pnr", "bitstream"]
    assert all(s["duration_s"] >= 0 for s in manifest["steps"])
    results = manifest["results"]
    assert results["simulation"]["bit_exact"] is True
    assert results["luts"]["available"] == 24288 and 0 < results["luts"]["used"] < 24288
    assert results["dsps"]["available"] == 28
    assert results["fmax_mhz"] > 10
    assert results["latency_ns"] == pytest.approx(results["latency_cycles"] * 1000 / results["fmax_mhz"], rel=0.01)
    assert results["initiation_interval"] == 1
    bitstream = bundle.path / manifest["architecture"]["bitstream"]
    assert bitstream.name == "firmware.bit" and bitstream.stat().st_size > 50_000
    assert {"yosys", "nextpnr-ecp5", "ecppack", "verilator"} <= set(manifest["tools"])
    log = (bundle.path / "build.log").read_text()
    for step in ("rtl", "sim", "synth", "pnr", "bitstream"):
        assert f" {step:<10} start " in log and f" {step:<10} done " in log
    assert "nextpnr-ecp5 --25k --package CABGA381" in log

    x = np.random.default_rng(0).normal(0, 2, (40, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for kind in ("emu", "sim"):
        done = runner.invoke(
            app,
            [
                "predict",
                str(bundle.path),
                "--device",
                kind,
                "--input",
                str(tmp_path / "x.npy"),
                "--output",
                str(tmp_path / f"{kind}.npz"),
            ],
        )
        assert done.exit_code == 0, done.output
    with np.load(tmp_path / "emu.npz") as emu, np.load(tmp_path / "sim.npz") as simulated:
        assert emu.files == simulated.files
        for name in emu.files:
            np.testing.assert_array_equal(simulated[name], emu[name])

    second = runner.invoke(app, [*args[:-1], str(tmp_path / "again.bundle")])
    assert second.exit_code == 0, second.output
    assert "identical request built before" in second.output
    again = Bundle(tmp_path / "again.bundle")
    assert again.manifest["cache_key"] == manifest["cache_key"]
    assert (again.path / "firmware.bit").read_bytes() == bitstream.read_bytes()
    forced = runner.invoke(app, [*args[:-1], str(tmp_path / "forced.bundle"), "--no-cache", "--until", "rtl"])
    assert forced.exit_code == 0 and "identical request" not in forced.output


def test_a_failing_tool_publishes_nothing_and_keeps_the_step_logs(tmp_path: Path, monkeypatch) -> None:
    """A yosys that fails (a native one first on PATH, as find_tool prefers) stops the build."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    yosys = fake_bin / "yosys"
    yosys.write_text(
        '#!/bin/sh\necho \'Yosys 0.0 (fake)\'\n[ "$1" = -V ] || [ "$1" = --version ] && exit 0\n'
        "echo 'ERROR: out of cheese in gw_core.v:12'\nexit 1\n"
    )
    yosys.chmod(yosys.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GATEWRIGHT_CACHE", str(tmp_path / "cache"))
    model_path = tmp_path / "tiny.onnx"
    model_path.write_bytes(om.pytorch_mlp([3, 4, 2]))
    result = CliRunner().invoke(
        app, ["build", str(model_path), "--target", "ecp5-25k", "--out", str(tmp_path / "t.bundle")]
    )
    assert result.exit_code == 2
    assert "out of cheese in gw_core.v:12" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t.bundle").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".t.bundle")] == []  # no staging left
    kept = tmp_path / "t.bundle.failed"
    assert "step logs kept in" in result.output and str(kept) in result.output
    log = (kept / "build.log").read_text()
    assert " sim        done " in log and " synth      failed " in log
    assert "out of cheese" in (kept / "synth.log").read_text()


def test_a_model_too_large_for_the_target_fails_to_fit(tmp_path: Path) -> None:
    model_path = tmp_path / "wide.onnx"
    model_path.write_bytes(om.pytorch_mlp([400, 64, 8]))  # 400 16-bit inputs: more flip-flops than the part has
    with pytest.raises(FitError, match="does not fit ice40-hx8k"):
        build(model_path, tmp_path / "w", target="ice40-hx8k", until="rtl", use_cache=False)
    assert not (tmp_path / "w").exists()


def test_bad_hardware_options_are_refused(tmp_path: Path) -> None:
    model_path = tmp_path / "tiny.onnx"
    model_path.write_bytes(om.pytorch_mlp([3, 4, 2]))
    for options, message in (
        (HardwareOptions("pipelined"), "unknown architecture 'pipelined'"),
        (HardwareOptions(clock_mhz=-5), "--clock-mhz -5"),
        (HardwareOptions("folded", reuse=0), "--reuse 0"),
        (HardwareOptions("auto", reuse=8), "--arch auto does not use it"),
    ):
        with pytest.raises(GatewrightError, match=message):
            build(model_path, tmp_path / "x", hardware=options)


def test_sim_device_refuses_plain_models_and_quantize_only_bundles(tmp_path: Path) -> None:
    model_path = tmp_path / "tiny.onnx"
    model_path.write_bytes(om.pytorch_mlp([3, 4, 2]))
    bundle, _ = build(model_path, tmp_path / "q", until="quantize")
    with devices.open("sim") as device:
        with pytest.raises(GatewrightError, match="--until sim"):
            device.load(bundle)
        with pytest.raises(GatewrightError, match="runs firmware bundles"):
            device.load(model_path)
    assert json.loads((bundle.path / "manifest.json").read_text())["architecture"] is None


def test_small_mlp_to_an_ice40_up5k_bitstream(tmp_path: Path) -> None:
    model_path = tmp_path / "small.onnx"
    model_path.write_bytes(om.pytorch_mlp([4, 6, 3]))
    bundle, _ = build(model_path, tmp_path / "up5k", target="ice40-up5k", use_cache=False)
    results = bundle.manifest["results"]
    assert results["simulation"]["bit_exact"] is True
    assert results["luts"]["available"] == 5280 and 0 < results["luts"]["used"] <= 5280
    assert results["dsps"]["available"] == 8
    assert results["fmax_mhz"] is None or results["fmax_mhz"] > 5
    assert bundle.manifest["architecture"]["bitstream"] == "firmware.bin"
    assert (bundle.path / "firmware.bin").stat().st_size > 50_000
    assert "icepack" in bundle.manifest["tools"]
