"""Every intake error path: clear, one message, naming what and where and how to fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from gatewright.errors import ModelLoadError, UnsupportedModelError
from gatewright.model import intake, load_model
from tests import onnx_models as om


def lstm_in_the_middle() -> bytes:
    """Gemm, then an LSTM-like unsupported op (Sin stands in for any elementwise op), then Gemm."""
    r = om.rng(0)
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Sin", ["h"], ["s"], name="weird_1"),
        helper.make_node("Gemm", ["s", "w2", "b2"], ["output"], name="fc2", transB=1),
    ]
    inits = {"w1": r.normal(size=(4, 3)), "b1": r.normal(size=4), "w2": r.normal(size=(2, 4)), "b2": r.normal(size=2)}
    return om.make_model(nodes, inits, ["N", 3], "output", ["N", 2])


def test_unsupported_operator_before_a_layer_names_op_node_position_and_fix() -> None:
    with pytest.raises(UnsupportedModelError) as info:
        intake(lstm_in_the_middle(), label="net.onnx")
    message = str(info.value)
    assert message.startswith("net.onnx: node 'weird_1' (Sin, position 1) cannot run on the FPGA")
    assert "node 'fc2' (Gemm, position 2) comes after it and needs the hardware" in message
    assert "Supported on hardware: Gemm, MatMul (+ Add bias), BatchNormalization, Relu, LeakyRelu, Clip" in message
    assert "--device cpu" in message


def test_lstm_layer_is_named() -> None:
    r = om.rng(1)
    hidden = 4
    nodes = [
        helper.make_node("Unsqueeze", ["input", "axes"], ["seq"], name="unsqueeze"),
        helper.make_node("LSTM", ["seq", "W", "R"], ["", "h_n"], name="lstm_1", hidden_size=hidden),
        helper.make_node("Flatten", ["h_n"], ["output"], name="flatten"),
    ]
    inits = {"axes": np.array([0]), "W": r.normal(size=(1, 4 * hidden, 3)), "R": r.normal(size=(1, 4 * hidden, hidden))}
    model = om.make_model(nodes, inits, ["N", 3], "output", [1, "M"])
    with pytest.raises(UnsupportedModelError) as info:
        intake(model, label="lstm.onnx")
    message = str(info.value)
    assert "node 'unsqueeze' (Unsqueeze, position 0) cannot run on the FPGA" in message
    assert "node 'lstm_1' (LSTM, position 1) comes after it and needs the hardware" in message


def test_conv_model_is_rejected_with_the_conv_node() -> None:
    r = om.rng(2)
    nodes = [
        helper.make_node("Conv", ["input", "k"], ["c"], name="conv0"),
        helper.make_node("Flatten", ["c"], ["output"], name="flat"),
    ]
    model = om.make_model(nodes, {"k": r.normal(size=(2, 1, 3, 3))}, ["N", 1, 5, 5], "output", ["N", 18])
    with pytest.raises(UnsupportedModelError, match=r"node 'conv0' \(Conv, position 0\) cannot run on the FPGA"):
        intake(model)


def test_a_branch_inside_the_hardware_part_is_explained() -> None:
    r = om.rng(3)
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], name="fc2", transB=1),
        helper.make_node("Add", ["a", "y"], ["output"], name="residual"),
    ]
    inits = {"w1": r.normal(size=(4, 4)), "b1": r.normal(size=4), "w2": r.normal(size=(4, 4)), "b2": r.normal(size=4)}
    model = om.make_model(nodes, inits, ["N", 4], "output", ["N", 4])
    with pytest.raises(UnsupportedModelError) as info:
        intake(model)
    assert "also feeds 'fc2', 'residual'; the hardware part must be a chain" in str(info.value)


def test_model_with_nothing_for_hardware() -> None:
    nodes = [helper.make_node("Softmax", ["input"], ["output"], name="softmax_only", axis=1)]
    model = om.make_model(nodes, {}, ["N", 4], "output", ["N", 4])
    with pytest.raises(UnsupportedModelError) as info:
        intake(model)
    message = str(info.value)
    assert "node 'softmax_only' (Softmax, position 0) cannot run on the FPGA" in message
    assert "the hardware part would be empty" in message


def test_integer_input_is_rejected() -> None:
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["output"], to=TensorProto.FLOAT)],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with pytest.raises(UnsupportedModelError, match="input 'ids' is int64; the hardware part needs a float tensor"):
        intake(model)


def test_reshape_that_mixes_the_batch_is_not_hardware() -> None:
    r = om.rng(4)
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"], name="reshape_all"),
        helper.make_node("MatMul", ["flat", "w"], ["output"], name="mm"),
    ]
    model = om.make_model(nodes, {"shape": np.array([1, -1]), "w": r.normal(size=(8, 2))}, ["N", 4], "output", [1, 2])
    with pytest.raises(UnsupportedModelError, match=r"Reshape to \[1, -1\] does not keep the batch axis"):
        intake(model)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"empty\.onnx: the file is empty, not an ONNX model"):
        load_model(path)


def test_truncated_file(tmp_path: Path) -> None:
    data = om.pytorch_mlp([8, 16, 4])
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"cut\.onnx: (not an ONNX model or truncated|the ONNX checker rejects)"):
        load_model(path)


def test_not_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a model\n" * 10)
    with pytest.raises(ModelLoadError, match=r"notes\.onnx: not an ONNX model or truncated"):
        load_model(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"nothere\.onnx: no such file"):
        load_model(tmp_path / "nothere.onnx")


def test_every_error_message_is_a_gatewright_error_not_a_library_one(tmp_path: Path) -> None:
    """Random byte strings never leak a protobuf or onnx exception."""
    r = om.rng(5)
    for size in (1, 7, 100, 1000):
        with pytest.raises(ModelLoadError):
            load_model(r.integers(0, 256, size, dtype=np.uint8).tobytes())
