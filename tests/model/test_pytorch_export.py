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


class ViewNet(torch.nn.Module):  # type: ignore[name-defined,misc]
    """The classic MNIST-style module: x.view(x.size(0), -1), two Linear layers, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 16)
        self.fc2 = torch.nn.Linear(16, 10)

    def forward(self, x: Any) -> Any:
        x = x.view(x.size(0), -1)
        return torch.softmax(self.fc2(torch.relu(self.fc1(x))), dim=1)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
def test_view_with_the_batch_size_from_the_input(dynamo: bool) -> None:
    torch.manual_seed(1)
    module = ViewNet().eval()
    x = np.random.default_rng(1).normal(size=(50, 1, 8, 8)).astype(np.float32)
    graph = intake(export(module, torch.from_numpy(x[:2]), dynamo))
    assert len(graph.hardware.dense_layers) == 2 and graph.hardware.n_in == 64
    assert [n.op_type for n in graph.nodes if n.part == "host"] == ["Softmax"]
    with torch.no_grad():
        logits = module.fc2(torch.relu(module.fc1(torch.from_numpy(x).view(50, -1)))).numpy()
    np.testing.assert_allclose(graph.hardware.forward(x), logits, rtol=1e-4, atol=1e-4)
