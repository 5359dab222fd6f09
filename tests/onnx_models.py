"""Small ONNX models built the way common exporters build them, for tests.

PyTorch's exporter writes Linear as Gemm(transB=1) with weight (out, in), names nodes
``/fc1/Gemm``, keeps a symbolic batch (``batch_size``) or a fixed one, and passes Clip bounds as
Constant nodes. Keras / tf2onnx write MatMul then Add. scikit-learn models come from skl2onnx itself.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def make_model(
    nodes: list[onnx.NodeProto],
    inits: dict[str, np.ndarray],
    input_shape: list[Any],
    output_name: str,
    output_shape: list[Any] | None = None,
    opset: int = OPSET,
    extra_outputs: list[onnx.ValueInfoProto] | None = None,
    input_name: str = "input",
    producer: str = "pytorch",
) -> bytes:
    graph = helper.make_graph(
        nodes,
        "test_graph",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, output_shape), *(extra_outputs or [])],
        [numpy_helper.from_array(_initializer(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=producer)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _initializer(value: np.ndarray) -> np.ndarray:
    array = np.asarray(value)
    return array.astype(np.int64) if array.dtype.kind in "iu" else array.astype(np.float32)


def pytorch_mlp(
    sizes: list[int],
    activation: str = "relu",
    batch: int | str = "batch_size",
    seed: int = 0,
    flatten_from: list[int] | None = None,
    softmax: bool = False,
) -> bytes:
    """nn.Sequential(Linear, act, Linear, ...) as torch.onnx.export writes it."""
    r = rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: dict[str, np.ndarray] = {}
    current = "input"
    input_shape: list[Any] = [batch, sizes[0]] if flatten_from is None else [batch, *flatten_from]
    if flatten_from is not None:
        nodes.append(
            helper.make_node("Flatten", [current], ["/flatten/Flatten_output_0"], name="/flatten/Flatten", axis=1)
        )
        current = "/flatten/Flatten_output_0"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        inits[f"fc{i}.weight"] = r.normal(0, 1 / np.sqrt(n_in), (n_out, n_in))
        inits[f"fc{i}.bias"] = r.normal(0, 0.1, n_out)
        out = f"/fc{i}/Gemm_output_0"
        nodes.append(
            helper.make_node(
                "Gemm",
                [current, f"fc{i}.weight", f"fc{i}.bias"],
                [out],
                name=f"/fc{i}/Gemm",
                alpha=1.0,
                beta=1.0,
                transB=1,
            )
        )
        current = out
        if i < len(sizes) - 2:
            act_out = f"/act{i}/output_0"
            if activation == "relu":
                nodes.append(helper.make_node("Relu", [current], [act_out], name=f"/act{i}/Relu"))
            elif activation == "leaky":
                nodes.append(helper.make_node("LeakyRelu", [current], [act_out], name=f"/act{i}/LeakyRelu", alpha=0.1))
            elif activation == "relu6":
                nodes.append(
                    helper.make_node(
                        "Constant",
                        [],
                        [f"/act{i}/min"],
                        name=f"/act{i}/Constant",
                        value=numpy_helper.from_array(np.array(0.0, np.float32)),
                    )
                )
                nodes.append(
                    helper.make_node(
                        "Constant",
                        [],
                        [f"/act{i}/max"],
                        name=f"/act{i}/Constant_1",
                        value=numpy_helper.from_array(np.array(6.0, np.float32)),
                    )
                )
                nodes.append(
                    helper.make_node("Clip", [current, f"/act{i}/min", f"/act{i}/max"], [act_out], name=f"/act{i}/Clip")
                )
            current = act_out
    if softmax:
        nodes.append(helper.make_node("Softmax", [current], ["output"], name="/softmax/Softmax", axis=1))
        current = "output"
    else:
        nodes.append(helper.make_node("Identity", [current], ["output"], name="/Identity"))
    return make_model(nodes, inits, input_shape, "output", [batch, sizes[-1]])


def keras_mlp(sizes: list[int], seed: int = 1, batchnorm: bool = True) -> bytes:
    """Dense layers as tf2onnx writes them: MatMul, Add (bias), BatchNormalization, Relu, Softmax."""
    r = rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: dict[str, np.ndarray] = {}
    current = "dense_input"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        inits[f"dense_{i}/kernel"] = r.normal(0, 1 / np.sqrt(n_in), (n_in, n_out))
        inits[f"dense_{i}/bias"] = r.normal(0, 0.1, n_out)
        nodes.append(
            helper.make_node("MatMul", [current, f"dense_{i}/kernel"], [f"dense_{i}/mm"], name=f"dense_{i}/MatMul")
        )
        nodes.append(
            helper.make_node("Add", [f"dense_{i}/mm", f"dense_{i}/bias"], [f"dense_{i}/out"], name=f"dense_{i}/BiasAdd")
        )
        current = f"dense_{i}/out"
        if i < len(sizes) - 2:
            if batchnorm:
                for name, value in (
                    ("gamma", r.uniform(0.5, 1.5, n_out)),
                    ("beta", r.normal(0, 0.2, n_out)),
                    ("mean", r.normal(0, 0.3, n_out)),
                    ("var", r.uniform(0.5, 2.0, n_out)),
                ):
                    inits[f"bn_{i}/{name}"] = value
                nodes.append(
                    helper.make_node(
                        "BatchNormalization",
                        [current, *(f"bn_{i}/{n}" for n in ("gamma", "beta", "mean", "var"))],
                        [f"bn_{i}/out"],
                        name=f"batch_normalization_{i}",
                        epsilon=1e-3,
                    )
                )
                current = f"bn_{i}/out"
            nodes.append(helper.make_node("Relu", [current], [f"relu_{i}/out"], name=f"re_lu_{i}/Relu"))
            current = f"relu_{i}/out"
    nodes.append(helper.make_node("Softmax", [current], ["dense_out"], name="softmax", axis=-1))
    return make_model(
        nodes,
        inits,
        ["unk__0", sizes[0]],
        "dense_out",
        ["unk__0", sizes[-1]],
        input_name="dense_input",
        producer="tf2onnx",
    )


def with_output(model: bytes, tensor: str) -> bytes:
    """The same model with an intermediate tensor added as an output (to read it from onnxruntime)."""
    proto = onnx.load_from_string(model)
    proto.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    return proto.SerializeToString()


def run_ort(model: bytes, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def sklearn_mlp(zipmap: bool, hidden: tuple[int, ...] = (16,), seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A small MLPClassifier on the digits data, exported by skl2onnx; returns model, X, y."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    mlp = MLPClassifier(hidden_layer_sizes=hidden, max_iter=300, random_state=seed).fit(x[:1200], y[:1200])
    model = to_onnx(mlp, x[:1], options={"zipmap": zipmap}, target_opset={"": 17, "ai.onnx.ml": 3})
    return model.SerializeToString(), x, y
