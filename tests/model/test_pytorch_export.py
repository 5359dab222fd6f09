"""Real PyTorch exports (TorchScript-based and dynamo-based exporters) through intake and the emulator."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pytest

from gatewright.model import Dense, intake
from gatewright.quant import Emulator, PrecisionConfig, calibrate, quantize

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def export(module: Any, example: Any, dynamo: bool) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs: dict[str, Any] = {"dynamo": dynamo, "input_names": ["x"], "output_names": ["y"]}
        if dynamo:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        else:
            kwargs["dynamic_axes"] = {"x": {0: "batch"}, "y": {0: "batch"}}
        torch.onnx.export(module, (example,), buffer, **kwargs)
    return buffer.getvalue()


def mlp(trained_batchnorm: bool) -> Any:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(16, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 16),
        torch.nn.LeakyReLU(0.05),
        torch.nn.Linear(16, 8),
        torch.nn.ReLU6(),
        torch.nn.Linear(8, 4),
    )
    if trained_batchnorm:
        batchnorm = module[2]
        batchnorm.running_mean.uniform_(-0.5, 0.5)
        batchnorm.running_var.uniform_(0.5, 2.0)
        batchnorm.weight.data.uniform_(0.5, 1.5)
        batchnorm.bias.data.uniform_(-0.2, 0.2)
    return module.eval()


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
@pytest.mark.parametrize("trained_batchnorm", [False, True], ids=["fresh-bn", "trained-bn"])
def test_pytorch_export_maps_and_quantizes(dynamo: bool, trained_batchnorm: bool) -> None:
    module = mlp(trained_batchnorm)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 1, 4, 4)).astype(np.float32)
    model = export(module, torch.from_numpy(x[:2]), dynamo)
    graph = intake(model)
    assert len(graph.hardware.dense_layers) == 4
    kinds = [layer.kind for layer in graph.hardware.layers if not isinstance(layer, Dense)]
    assert kinds == ["relu", "leaky_relu", "clip"]
    assert graph.host.model is None and graph.hardware.output == "y"
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(graph.hardware.forward(x), expected, rtol=1e-4, atol=1e-4)

    calib, fresh = x[:300], x[300:]
    quantized = quantize(graph.hardware, PrecisionConfig(), calibrate(graph.hardware, calib))
    emulated = Emulator(quantized).run(fresh)
    assert np.mean(emulated.argmax(1) == expected[300:].argmax(1)) >= 0.95
    assert np.max(np.abs(emulated - expected[300:])) < 0.1
