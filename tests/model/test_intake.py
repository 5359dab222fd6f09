"""Intake: every supported operator and exporter style maps to the right float IR and split."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from gatewright.errors import UnsupportedModelError
from gatewright.model import Activation, Dense, intake
from tests import onnx_models as om


def assert_hardware_matches_onnxruntime(model: bytes, x: np.ndarray) -> None:
    """The IR's float forward equals what onnxruntime computes for the boundary tensor."""
    graph = intake(model)
    boundary = graph.hardware.output
    ort_value = om.run_ort(
        om.with_output(model, boundary) if boundary not in [o.name for o in graph.outputs] else model,
        {graph.inputs[0].name: x},
    )[boundary]
    ours = graph.hardware.forward(x)
    if graph.hardware.output_transposed:
        ours = ours.T
    np.testing.assert_allclose(ours, ort_value, rtol=1e-4, atol=1e-4)


def test_pytorch_style_gemm_trans_b_relu() -> None:
    model = om.pytorch_mlp([8, 16, 4])
    graph = intake(model)
    kinds = [type(layer).__name__ for layer in graph.hardware.layers]
    assert kinds == ["Dense", "Activation", "Dense"]
    assert [layer.name for layer in graph.hardware.dense_layers] == ["/fc0/Gemm", "/fc1/Gemm"]
    assert graph.hardware.n_in == 8 and graph.hardware.n_out == 4
    assert graph.hardware.macs == 8 * 16 + 16 * 4
    assert graph.inputs[0].shape == ("batch_size", 8)
    assert graph.host.model is None  # Identity at the end is a no-op on hardware
    assert graph.hardware.output == "output"
    assert_hardware_matches_onnxruntime(model, om.rng(1).normal(size=(5, 8)).astype(np.float32))


@pytest.mark.parametrize("activation", ["leaky", "relu6"])
def test_leaky_relu_and_clip_with_constant_bounds(activation: str) -> None:
    model = om.pytorch_mlp([6, 10, 10, 3], activation=activation)
    graph = intake(model)
    acts = [layer for layer in graph.hardware.layers if isinstance(layer, Activation)]
    assert len(acts) == 2
    if activation == "leaky":
        assert acts[0].kind == "leaky_relu" and acts[0].alpha == pytest.approx(0.1)
    else:
        assert acts[0].kind == "clip" and (acts[0].low, acts[0].high) == (0.0, 6.0)
    constants = [n for n in graph.nodes if n.op_type == "Constant"]
    assert all(n.part == "constant" for n in constants)
    assert_hardware_matches_onnxruntime(model, 3 * om.rng(2).normal(size=(7, 6)).astype(np.float32))


def test_clip_bounds_as_attributes_before_opset_11() -> None:
    nodes = [
        helper.make_node("Gemm", ["input", "w", "b"], ["h"], name="fc", transB=1),
        helper.make_node("Clip", ["h"], ["c"], name="clip", min=-1.0, max=2.5),
        helper.make_node("Gemm", ["c", "w2", "b2"], ["output"], name="fc2", transB=1),
    ]
    r = om.rng(3)
    inits = {"w": r.normal(size=(5, 4)), "b": r.normal(size=5), "w2": r.normal(size=(2, 5)), "b2": r.normal(size=2)}
    model = om.make_model(nodes, inits, ["N", 4], "output", ["N", 2], opset=10)
    clip = intake(model).hardware.layers[1]
    assert isinstance(clip, Activation) and (clip.low, clip.high) == (-1.0, 2.5)
    assert_hardware_matches_onnxruntime(model, r.normal(size=(9, 4)).astype(np.float32))


def test_keras_style_matmul_add_batchnorm_softmax_split() -> None:
    model = om.keras_mlp([10, 12, 6, 3])
    graph = intake(model)
    assert [type(layer).__name__ for layer in graph.hardware.layers] == [
        "Dense",
        "Activation",
        "Dense",
        "Activation",
        "Dense",
    ]
    # MatMul + Add + BatchNormalization fold into one Dense each
    assert graph.hardware.output == "dense_2/out"
    assert graph.host.nodes == ("softmax",)
    assert [n.part for n in graph.nodes if n.op_type == "BatchNormalization"] == ["hardware", "hardware"]
    assert_hardware_matches_onnxruntime(model, om.rng(4).normal(size=(6, 10)).astype(np.float32))


def test_batchnorm_and_scaling_before_the_first_layer_fold_forward() -> None:
    r = om.rng(5)
    nodes = [
        helper.make_node("Sub", ["input", "mean"], ["centered"], name="sub"),
        helper.make_node("Div", ["centered", "std"], ["scaled"], name="div"),
        helper.make_node("BatchNormalization", ["scaled", "g", "be", "m", "v"], ["bn"], name="bn"),
        helper.make_node("MatMul", ["bn", "w"], ["mm"], name="mm"),
        helper.make_node("Add", ["bias", "mm"], ["y"], name="bias"),  # constant first: Add commutes
        helper.make_node("Mul", ["y", "two"], ["output"], name="times_two"),  # folds into the open layer
    ]
    inits = {
        "mean": r.normal(size=(1, 4)),
        "std": r.uniform(1, 2, size=4),
        "g": r.uniform(0.5, 1.5, 4),
        "be": r.normal(size=4),
        "m": r.normal(size=4),
        "v": r.uniform(0.5, 2, 4),
        "w": r.normal(size=(4, 3)),
        "bias": r.normal(size=3),
        "two": np.array([2.0]),
    }
    model = om.make_model(nodes, inits, ["N", 4], "output", ["N", 3])
    graph = intake(model)
    assert len(graph.hardware.layers) == 1 and isinstance(graph.hardware.layers[0], Dense)
    assert set(graph.hardware.nodes) == {"sub", "div", "bn", "mm", "bias", "times_two"}
    # the scaling before the first layer stays an input transform, applied before quantization
    assert graph.hardware.input_scale is not None and graph.hardware.input_offset is not None
    assert graph.hardware.input_scale.shape == (4,)
    assert_hardware_matches_onnxruntime(model, r.normal(size=(8, 4)).astype(np.float32))


@pytest.mark.parametrize(
    ("trans_a", "trans_b", "activation_is_b"),
    [
        (0, 0, False),
        (0, 1, False),
        (1, 0, False),
        (1, 1, False),
        (0, 0, True),
        (0, 1, True),
        (1, 0, True),
        (1, 1, True),
    ],
)
def test_gemm_every_transpose_alpha_beta(trans_a: int, trans_b: int, activation_is_b: bool) -> None:
    """Gemm with the activation on either side, in every layout; Transpose gives the layout Gemm wants."""
    r = om.rng(6)
    n_in, n_out = 5, 3
    nodes = []
    current = "input"
    # the batch must sit where op(A) / op(B) expect it: rows of op(A), columns of op(B)
    need_transposed = bool(trans_a) if not activation_is_b else not trans_b
    if need_transposed:
        nodes.append(helper.make_node("Transpose", [current], ["xt"], name="t", perm=[1, 0]))
        current = "xt"
    if activation_is_b:
        weight = r.normal(size=(n_in, n_out) if trans_a else (n_out, n_in))
        inputs = ["w", current, "c"]
        bias = r.normal(size=(n_out, 1))
    else:
        weight = r.normal(size=(n_out, n_in) if trans_b else (n_in, n_out))
        inputs = [current, "w", "c"]
        bias = r.normal(size=(1, n_out))
    nodes.append(
        helper.make_node("Gemm", inputs, ["output"], name="gemm", transA=trans_a, transB=trans_b, alpha=0.5, beta=2.0)
    )
    out_shape = [n_out, "N"] if activation_is_b else ["N", n_out]
    model = om.make_model(nodes, {"w": weight, "c": bias}, ["N", n_in], "output", out_shape)
    graph = intake(model)
    assert graph.hardware.output_transposed == activation_is_b
    assert_hardware_matches_onnxruntime(model, r.normal(size=(4, n_in)).astype(np.float32))


def test_shape_no_ops_flatten_reshape_identity_cast_dropout() -> None:
    r = om.rng(7)
    nodes = [
        helper.make_node("Cast", ["input"], ["cast"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["cast", "shape"], ["r"], name="reshape"),
        helper.make_node("Identity", ["r"], ["i"], name="identity"),
        helper.make_node("Flatten", ["i"], ["f"], name="flatten", axis=1),
        helper.make_node("Dropout", ["f"], ["d"], name="dropout"),
        helper.make_node("Gemm", ["d", "w", "b"], ["output"], name="fc", transB=1),
    ]
    inits = {"shape": np.array([0, 4, 3]), "w": r.normal(size=(2, 12)), "b": r.normal(size=2)}
    model = om.make_model(nodes, inits, ["N", 2, 6], "output", ["N", 2])
    ir = intake(model)
    assert ir.hardware.n_in == 12
    assert [n.part for n in ir.nodes] == ["hardware"] * 6
    assert_hardware_matches_onnxruntime(model, r.normal(size=(3, 2, 6)).astype(np.float32))


def test_fixed_batch_pytorch_export() -> None:
    model = om.pytorch_mlp([4, 8, 2], batch=1)
    graph = intake(model)
    assert graph.fixed_batch == 1
    assert graph.inputs[0].shape == (1, 4)


@pytest.mark.parametrize("zipmap", [False, True])
def test_skl2onnx_classifier_split_keeps_outputs(zipmap: bool, sklearn_digits: dict) -> None:
    model, x, _ = sklearn_digits[zipmap]
    graph = intake(model)
    names = [o.name for o in graph.outputs]
    assert names == (["output_label", "output_probability"] if zipmap else ["label", "probabilities"])
    assert graph.outputs[0].dtype == "int64"
    if zipmap:
        assert graph.outputs[1].dtype == "seq(map(int64,tensor(float32)))" and graph.outputs[1].shape is None
        assert "ZipMap" in [n.op_type for n in graph.nodes if n.part == "host"]
    else:
        assert graph.outputs[1].dtype == "float32" and graph.outputs[1].shape == (None, 10)
    assert [type(layer).__name__ for layer in graph.hardware.layers] == ["Dense", "Activation", "Dense"]
    host_ops = {n.op_type for n in graph.nodes if n.part == "host"}
    assert {"Softmax", "ArgMax", "ArrayFeatureExtractor"} <= host_ops
    assert graph.host.inputs == (graph.hardware.output,)
    assert graph.host.outputs == tuple(names)
    assert_hardware_matches_onnxruntime(model, x[:20])


def test_skl2onnx_pipeline_with_standard_scaler_folds_the_scaler() -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import make_regression
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = make_regression(n_samples=200, n_features=6, random_state=0)
    pipe = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(8,), max_iter=50, random_state=0)).fit(x, y)
    model = to_onnx(pipe, x[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()
    graph = intake(model)
    assert "Scaler" in [n.op_type for n in graph.nodes if n.part == "hardware"]
    assert len(graph.hardware.dense_layers) == 2
    assert_hardware_matches_onnxruntime(model, x[:10].astype(np.float32))


def test_model_output_inside_the_chain_ends_the_hardware_part() -> None:
    """When logits are an output and Softmax follows, both outputs keep their names and order."""
    r = om.rng(8)
    nodes = [
        helper.make_node("Gemm", ["input", "w", "b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    model = om.make_model(
        nodes,
        {"w": r.normal(size=(3, 4)), "b": r.normal(size=3)},
        ["N", 4],
        "probs",
        ["N", 3],
        extra_outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
    )
    graph = intake(model)
    assert [o.name for o in graph.outputs] == ["probs", "logits"]
    assert graph.hardware.output == "logits"
    assert graph.host.outputs == ("probs",)


def test_hardware_part_ends_on_a_matrix_and_a_final_reshape_goes_to_the_host() -> None:
    """MatMul -> Reshape to (N, 2, 3) -> Softmax over the last axis: the reshape runs on the host."""
    r = om.rng(9)
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["h"], name="mm"),
        helper.make_node("Reshape", ["h", "shape"], ["r"], name="to3d"),
        helper.make_node("Softmax", ["r"], ["output"], name="softmax", axis=-1),
    ]
    model = om.make_model(
        nodes, {"w": r.normal(size=(4, 6)), "shape": np.array([0, 2, 3])}, ["N", 4], "output", ["N", 2, 3]
    )
    graph = intake(model)
    assert graph.hardware.output == "h" and graph.host.nodes == ("to3d", "softmax")
    assert_hardware_matches_onnxruntime(model, r.normal(size=(5, 4)).astype(np.float32))


def test_cast_to_float16_is_left_to_the_host_and_identity_transpose_is_a_no_op() -> None:
    r = om.rng(10)
    nodes = [
        helper.make_node("Transpose", ["input"], ["t"], name="same", perm=[0, 1]),
        helper.make_node("MatMul", ["t", "w"], ["h"], name="mm"),
        helper.make_node("Cast", ["h"], ["output"], name="half", to=TensorProto.FLOAT16),
    ]
    graph_proto = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT16, ["N", 3])],
        [onnx.numpy_helper.from_array(r.normal(size=(4, 3)).astype(np.float32), "w")],
    )
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    graph = intake(model)
    assert graph.hardware.output == "h" and graph.host.nodes == ("half",)
    assert "same" in graph.hardware.nodes


def test_reshape_with_a_shape_computed_from_the_input_keeps_the_batch() -> None:
    """PyTorch's TorchScript exporter writes x.view(x.size(0), -1) as Shape, Gather, Unsqueeze, Concat, Reshape."""
    r = om.rng(11)
    nodes = [
        helper.make_node("Shape", ["input"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["input", "target"], ["flat"], name="view"),
        helper.make_node("Gemm", ["flat", "w", "b"], ["output"], name="fc", transB=1),
    ]
    inits = {
        "zero": np.array(0),
        "axes": np.array([0]),
        "minus_one": np.array([-1]),
        "w": r.normal(size=(3, 12)),
        "b": r.normal(size=3),
    }
    model = om.make_model(nodes, inits, ["N", 3, 4], "output", ["N", 3])
    graph = intake(model)
    parts = {n.name: n.part for n in graph.nodes}
    assert parts == {
        "shape": "constant",
        "gather": "constant",
        "unsqueeze": "constant",
        "concat": "constant",
        "view": "hardware",
        "fc": "hardware",
    }
    assert_hardware_matches_onnxruntime(model, r.normal(size=(5, 3, 4)).astype(np.float32))


def test_reshape_that_moves_the_batch_is_still_rejected() -> None:
    r = om.rng(12)
    nodes = [
        helper.make_node("Shape", ["input"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["minus_one", "n1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["input", "target"], ["moved"], name="view"),
        helper.make_node("MatMul", ["moved", "w"], ["output"], name="mm"),
    ]
    inits = {"zero": np.array(0), "axes": np.array([0]), "minus_one": np.array([-1]), "w": r.normal(size=(4, 2))}
    model = om.make_model(nodes, inits, ["N", 4], "output", [4, 2])
    with pytest.raises(
        UnsupportedModelError,
        match=r"node 'view' \(Reshape, position 4\) cannot run on the FPGA: Reshape "
        r"moves the batch axis",
    ):
        intake(model)


def test_the_batch_size_as_a_number_is_not_folded_as_a_constant() -> None:
    """fc(x / x.size(0)) divides by the batch size: that is no per-feature constant."""
    r = om.rng(13)
    nodes = [
        helper.make_node("Shape", ["input"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Cast", ["n"], ["nf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Div", ["input", "nf"], ["scaled"], name="div"),
        helper.make_node("Gemm", ["scaled", "w", "b"], ["output"], name="fc", transB=1),
    ]
    model = om.make_model(
        nodes, {"zero": np.array(0), "w": r.normal(size=(3, 4)), "b": r.normal(size=3)}, ["N", 4], "output", ["N", 3]
    )
    with pytest.raises(UnsupportedModelError, match="cannot run on the FPGA"):
        intake(model)


def test_a_shape_of_a_host_tensor_stays_in_graph_order() -> None:
    """softmax(fc(x)).view(n, 2, 3): the Shape reads the host's Softmax, so it must run after it."""
    r = om.rng(14)
    nodes = [
        helper.make_node("Gemm", ["input", "w", "b"], ["h"], name="fc", transB=1),
        helper.make_node("Softmax", ["h"], ["p"], name="softmax", axis=1),
        helper.make_node("Shape", ["p"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "rest"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["p", "target"], ["output"], name="view"),
    ]
    inits = {
        "w": r.normal(size=(6, 4)),
        "b": r.normal(size=6),
        "zero": np.array(0),
        "axes": np.array([0]),
        "rest": np.array([2, 3]),
    }
    model = om.make_model(nodes, inits, ["N", 4], "output", ["N", 2, 3])
    graph = intake(model)
    assert graph.hardware.output == "h"
    x = r.normal(size=(5, 4)).astype(np.float32)
    host = om.run_ort(graph.host.model, {"h": graph.hardware.forward(x).astype(np.float32)})["output"]
    np.testing.assert_allclose(host, om.run_ort(model, {"input": x})["output"], rtol=1e-5, atol=1e-6)
