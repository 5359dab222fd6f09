"""The device API beyond infer: model info and formats, quantize / dequantize, futures, queue pairs and
bursts, counters, self-test, parameter updates, failures that stay with their request, and noop."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from gatewright import devices
from gatewright.build.bundle import Bundle
from gatewright.build.pipeline import build
from gatewright.errors import DeviceError, InferenceError, InputDataError
from gatewright.quant.fixed import FixedFormat
from tests import onnx_models as om

SIZES = [6, 12, 4]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """A PyTorch-style MLP, its bundle (quantize only: emu and cpu need nothing more) and test data."""
    work = tmp_path_factory.mktemp("api")
    (work / "m.onnx").write_bytes(om.pytorch_mlp(SIZES, seed=3))
    x = om.rng(1).normal(size=(200, SIZES[0])).astype(np.float32)
    np.save(work / "calib.npy", x)
    build(work / "m.onnx", work / "m.bundle", until="quantize", calibration=work / "calib.npy", use_cache=False)
    return work / "m.onnx", work / "m.bundle", x


def test_device_and_model_info(mlp: tuple[Path, Path, np.ndarray]) -> None:
    _, bundle_dir, _ = mlp
    bundle = Bundle(bundle_dir)
    with devices.open("emu") as emu:
        info = emu.info()
        assert (info.kind, info.queue_pairs, info.max_models) == ("emu", 8, None)
        model = emu.load(bundle_dir)
        again = emu.load(bundle_dir)
        assert (model.id, again.id) == (model.name, f"{model.name}#2")  # handles are unique per device
        described = model.info()
    assert described.source == "bundle" and described.device == "emu"
    (x_info,) = described.inputs
    (y_info,) = described.outputs
    formats = bundle.manifest["quantization"]["formats"]
    assert str(x_info.format) == formats["input"] and str(y_info.format) == formats["output"]
    assert x_info.scale == 2.0**-x_info.format.frac and x_info.zero_point == 0
    assert x_info.shape == bundle.inputs[0].shape and x_info.dtype == "float32"
    assert devices.ModelInfo.from_json(described.to_json()) == described
    with devices.open("cpu") as cpu:
        float_info = cpu.load(bundle_dir).info()
    assert float_info.source == "onnx" and float_info.inputs[0].format is None


def test_quantize_and_dequantize_use_the_devices_formats(mlp: tuple[Path, Path, np.ndarray]) -> None:
    _, bundle_dir, _ = mlp
    golden = Bundle(bundle_dir).golden()
    with devices.open("emu") as emu:
        model = emu.load(bundle_dir)
        raw = model.quantize("input", golden["input.input"])
        np.testing.assert_array_equal(raw, golden["hw.input_raw"])
        out = model.dequantize("output", golden["hw.output_raw"])
        np.testing.assert_array_equal(out.astype(np.float32), golden["output.output"])
        fmt = model.info().outputs[0].format
        assert isinstance(fmt, FixedFormat)
        np.testing.assert_array_equal(model.quantize("output", out), golden["hw.output_raw"])  # exact round trip
        with pytest.raises(InputDataError, match="no tensor 'nope'"):
            model.quantize("nope", [1.0])
    with devices.open("cpu") as cpu, pytest.raises(DeviceError, match="has no fixed-point format on this device"):
        cpu.load(bundle_dir).quantize("input", [[0.0] * SIZES[0]])


def test_submit_and_bursts_keep_order_and_fail_one_request_only(mlp: tuple[Path, Path, np.ndarray]) -> None:
    _, bundle_dir, x = mlp
    with devices.open("emu") as emu:
        model = emu.load(bundle_dir)
        futures = [model.submit({"input": x[i : i + 3]}) for i in range(0, 30, 3)]
        for i, future in zip(range(0, 30, 3), futures, strict=True):
            np.testing.assert_array_equal(
                future.result(timeout=30)["output"], model.infer({"input": x[i : i + 3]})["output"]
            )
        emu.stats_reset()

        qp = emu.queue_pair(3)
        ops = [devices.Op(model, {"input": x[i : i + 1]}, user_data=i) for i in range(40)]
        ops[17] = devices.Op(model, {"input": x[:1, :5]}, user_data=17)  # wrong shape: only this one fails
        assert qp.enqueue_burst(ops) == 40
        done: list[devices.Op] = []
        while len(done) < 40:
            done += qp.dequeue_burst(16, timeout=30)
        assert [op.user_data for op in done] == list(range(40))
        assert done[17].status == "invalid_argument" and "has shape [1, 5]" in str(done[17].error)
        assert done[17].future.exception() is not None
        for op in done[:17] + done[18:]:
            assert op.status == "ok"
            np.testing.assert_array_equal(
                op.outputs["output"], model.infer({"input": x[op.user_data : op.user_data + 1]})["output"]
            )
        assert emu.stats() == {"enqueued": 40 + 39, "dequeued": 40 + 39, "errors": 1}  # the burst, then 39 checks
        with pytest.raises(DeviceError, match="queue pair 8 does not exist"):
            emu.queue_pair(8)


def test_xstats_count_and_time_each_model_and_reset(mlp: tuple[Path, Path, np.ndarray]) -> None:
    _, bundle_dir, x = mlp
    with devices.open("emu") as emu:
        a, b = emu.load(bundle_dir), emu.load(bundle_dir)
        for _ in range(5):
            a.infer({"input": x[:10]})
        b.infer({"input": x[:4]})
        with pytest.raises(InputDataError):
            b.infer({"input": x[:4, :2]})
        stats = emu.xstats()
        assert stats[f"model.{a.id}.count"] == 5 and stats[f"model.{a.id}.samples"] == 50
        assert stats[f"model.{b.id}.count"] == 1 and stats[f"model.{b.id}.errors"] == 1
        assert stats["device.count"] == 6 and stats["device.errors"] == 1 and stats["device.models"] == 2
        lat = [stats[f"model.{a.id}.latency_us_{k}"] for k in ("min", "p50", "p99", "max")]
        assert 0 < lat[0] <= lat[1] <= lat[2] <= lat[3]
        assert lat[0] <= stats[f"model.{a.id}.latency_us_mean"] <= lat[3]
        emu.xstats_reset()
        cleared = emu.xstats()
        assert cleared[f"model.{a.id}.count"] == 0 and cleared["device.count"] == 0
        assert emu.stats() == {"enqueued": 0, "dequeued": 0, "errors": 0}


def test_selftest_runs_the_golden_vectors(mlp: tuple[Path, Path, np.ndarray]) -> None:
    _, bundle_dir, _ = mlp
    with devices.open("emu") as emu:
        result = emu.load(bundle_dir).selftest()
    assert result.passed and result.vectors == len(Bundle(bundle_dir).golden()["hw.input_raw"])
    assert "bit-exact" in str(result)
    with devices.open("cpu") as cpu, pytest.raises(DeviceError, match="no golden vectors"):
        cpu.load(bundle_dir).selftest()


def test_selftest_reports_a_damaged_bundle(mlp: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    _, bundle_dir, _ = mlp
    import shutil

    copy = tmp_path / "copy.bundle"
    shutil.copytree(bundle_dir, copy)
    golden = dict(Bundle(copy).golden())
    golden["output.output"] = golden["output.output"].copy()
    golden["output.output"][2] += 1.0  # one vector's expected output no longer matches the hardware
    np.savez(copy / "golden.npz", **golden)
    with devices.open("emu") as emu:
        result = emu.load(copy).selftest()
    assert not result.passed and result.mismatches == {"output": 1}


def test_update_params_where_the_backend_can(mlp: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    _, bundle_dir, x = mlp
    retrained = tmp_path / "retrained.onnx"
    retrained.write_bytes(om.pytorch_mlp(SIZES, seed=4))  # same structure, other weights
    with devices.open("cpu") as cpu:
        model = cpu.load(bundle_dir)
        before = model.infer({"input": x})["output"]
        model.update_params(retrained)
        np.testing.assert_array_equal(
            model.infer({"input": x})["output"], om.run_ort(retrained.read_bytes(), {"input": x})["output"]
        )
        assert not np.array_equal(before, model.infer({"input": x})["output"])
    with devices.open("emu") as emu:
        model = emu.load(bundle_dir)
        before = model.infer({"input": x})["output"]
        model.update_params(retrained)
        after = model.infer({"input": x})["output"]
        reference = om.run_ort(retrained.read_bytes(), {"input": x})["output"]
        assert not np.array_equal(before, after)
        assert np.mean(np.argmax(after, 1) == np.argmax(reference, 1)) > 0.9  # the new weights, quantized
        assert model.info().outputs[0].format == emu.load(bundle_dir).info().outputs[0].format  # same formats
        other = tmp_path / "other.onnx"
        other.write_bytes(om.pytorch_mlp([6, 10, 4]))
        with pytest.raises(DeviceError, match=r"cannot take the new weights in place.*rebuild"):
            model.update_params(other)


def test_noop_answers_zeros_of_the_declared_shapes(mlp: tuple[Path, Path, np.ndarray]) -> None:
    source, bundle_dir, x = mlp
    with devices.open("noop") as noop:
        out = noop.load(source).infer({"input": x[:7]})["output"]
        assert out.shape == (7, SIZES[-1]) and out.dtype == np.float32 and not out.any()
        with pytest.raises(InputDataError):
            noop.load(bundle_dir).infer({"input": x[:7, :1]})
    assert "noop" in {info.kind for info in devices.list()}


def test_unknown_options_and_models_are_errors(mlp: tuple[Path, Path, np.ndarray]) -> None:
    _, bundle_dir, _ = mlp
    with pytest.raises(DeviceError, match="takes no options"):
        devices.open("emu", token="x")
    with devices.open("emu") as emu:
        model = emu.load(bundle_dir)
        assert emu.model(model.id) is model
        emu.unload(model)
        with pytest.raises(DeviceError, match="no model"):
            emu.model(model.id)
        with pytest.raises(DeviceError, match="is not loaded"):
            emu.unload(model)


@pytest.mark.toolchain
@pytest.mark.slow
def test_a_failing_simulator_fails_its_requests_and_not_the_device(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(om.pytorch_mlp([4, 5, 3], seed=2))
    build(tmp_path / "m.onnx", tmp_path / "m.bundle", until="sim")
    x = om.rng(2).normal(size=(5, 4)).astype(np.float32)
    with devices.open("sim") as sim:
        broken, healthy = sim.load(tmp_path / "m.bundle"), sim.load(tmp_path / "m.bundle")
        want = healthy.infer({"input": x})["output"]
        assert healthy.last_cycles is not None and healthy.last_cycles > 0
        os.kill(broken.simulator._process.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        broken.simulator._process.wait()  # type: ignore[attr-defined]
        with pytest.raises(InferenceError, match="inference failed") as failure:
            broken.infer({"input": x})
        assert failure.value.status == "unavailable"  # that simulator is gone
        np.testing.assert_array_equal(healthy.infer({"input": x})["output"], want)
        stats = sim.xstats()
        assert stats[f"model.{broken.id}.errors"] == 1 and stats[f"model.{healthy.id}.count"] == 2
        assert stats[f"model.{healthy.id}.cycles_last"] == healthy.last_cycles
        with pytest.raises(DeviceError, match="cannot be changed in place; rebuild"):
            healthy.update_params(tmp_path / "m.onnx")
