"""Split a model into its hardware part (the longest integer-friendly prefix) and its host part.

The hardware part starts at the model's first input and follows the chain of nodes while each one is
supported. Linear maps (Gemm in any form, MatMul, a following bias Add) become ``Dense`` layers;
batch normalization and per-feature constant Add / Sub / Mul / Div fold into the neighbouring
linear layer; Relu, LeakyRelu and Clip become ``Activation`` layers; Identity, Dropout, Flatten,
Reshape that keeps the batch axis, Transpose of a matrix and Cast between float types change
nothing the hardware sees. Everything after the chain is the host part, which must hold no layer
that needs the hardware (no Gemm, MatMul, Conv, recurrent cell, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from gatewright.errors import UnsupportedModelError
from gatewright.model.host import extract_host
from gatewright.model.ir import Activation, Dense, HardwarePart, HostPart, Layer, Node
from gatewright.model.load import tensor_spec

HARDWARE_OPS = (
    "Gemm",
    "MatMul (+ Add bias)",
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "Clip",
    "Identity",
    "Dropout",
    "Flatten",
    "Reshape (batch axis kept)",
    "Transpose (2-D)",
    "Cast (to float32 or float64)",
    "Add/Sub/Mul/Div by a per-feature constant",
    "Scaler (ai.onnx.ml)",
)
# Operators that carry learned weights or a network layer: they cannot be left to the host.
LAYER_OPS = frozenset(
    {
        "Gemm",
        "MatMul",
        "MatMulInteger",
        "QLinearMatMul",
        "Conv",
        "ConvInteger",
        "QLinearConv",
        "ConvTranspose",
        "LSTM",
        "GRU",
        "RNN",
        "Einsum",
        "Attention",
        "MultiHeadAttention",
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "LinearClassifier",
        "LinearRegressor",
        "SVMClassifier",
        "SVMRegressor",
        "TreeEnsembleClassifier",
        "TreeEnsembleRegressor",
        "TreeEnsemble",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "LpPool",
    }
)
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


_MAPPED_OPS = frozenset(
    {
        ("ai.onnx", op)
        for op in (
            "Identity",
            "Dropout",
            "Cast",
            "Flatten",
            "Reshape",
            "Transpose",
            "Relu",
            "LeakyRelu",
            "Clip",
            "Gemm",
            "MatMul",
            "BatchNormalization",
            "Add",
            "Sub",
            "Mul",
            "Div",
        )
    }
    | {("ai.onnx.ml", "Scaler")}
)


class _Reject(Exception):
    """A node the hardware chain cannot take; the message says why (used in the error text)."""


@dataclass
class _Chain:
    """The state of the hardware chain while it is being walked."""

    feats: int
    rank: int
    batch_axis: int = 0
    layers: list[Layer] = field(default_factory=list)
    open_dense: bool = False  # the last layer is a Dense that no activation has closed yet
    pending_scale: np.ndarray | None = None  # a per-feature affine waiting for the next Dense
    pending_offset: np.ndarray | None = None
    input_scale: np.ndarray | None = None  # a leading affine, kept for the input quantizer
    input_offset: np.ndarray | None = None

    @property
    def settled(self) -> bool:
        return self.pending_scale is None


def partition(inferred: onnx.ModelProto, label: str) -> tuple[HardwarePart, HostPart, tuple[Node, ...], int | None]:
    """Walk the chain, then extract the host subgraph. Raises ``UnsupportedModelError`` with a fix."""
    graph = inferred.graph
    constants, constant_positions = _constants(graph)
    value_types = {v.name: v.type for v in [*graph.input, *graph.value_info, *graph.output]}
    shapes = _fold_shape_computations(graph, value_types, constants, constant_positions)
    graph_inputs = [i for i in graph.input if i.name not in constants]
    output_names = [o.name for o in graph.output]
    consumers: dict[str, list[int]] = {}
    for position, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(position)

    if not graph_inputs:
        raise UnsupportedModelError(f"{label}: the model has no inputs; gatewright needs one float input")
    first = graph_inputs[0]
    first_spec = tensor_spec(first.name, first.type)
    if first.type.tensor_type.elem_type not in _FLOAT_TYPES or first_spec.shape is None:
        raise UnsupportedModelError(
            f"{label}: input '{first.name}' is {first_spec.dtype}; the hardware part needs a float tensor input. "
            "Serve the model on the CPU (--device cpu)."
        )
    shape = first_spec.shape
    if len(shape) < 2 or not all(isinstance(d, int) for d in shape[1:]):
        raise UnsupportedModelError(
            f"{label}: input '{first.name}' has shape {list(shape)}; the hardware part needs (batch, features...) "
            "with every dimension after the batch fixed. Export the model with a fixed feature size."
        )
    fixed_batch = shape[0] if isinstance(shape[0], int) else None
    chain = _Chain(feats=math.prod(d for d in shape[1:] if isinstance(d, int)), rank=len(shape))

    current, taken, committed = first.name, [], (0, first.name, 0, 0)
    stop_position, stop_reason = None, ""
    while current not in output_names:
        users = [u for u in consumers.get(current, []) if u not in constant_positions]  # Shape reads no values
        if len(users) != 1:
            if len(users) > 1:
                stop_position = users[0]
                names = ", ".join(f"'{graph.node[u].name}'" for u in users)
                stop_reason = f"its input '{current}' also feeds {names}; the hardware part must be a chain"
            break
        node = graph.node[users[0]]
        try:
            if (node.domain or "ai.onnx", node.op_type) not in _MAPPED_OPS:
                raise _Reject(f"{node.op_type} has no hardware mapping")
            _check_single_output(node, consumers, output_names)
            _take(node, chain, constants, fixed_batch, shapes)
        except _Reject as exc:
            stop_position, stop_reason = users[0], str(exc)
            break
        taken.append(users[0])
        current = node.output[0]
        if chain.settled and chain.rank == 2:  # the hardware part ends on a (batch, features) tensor
            committed = (len(taken), current, len(chain.layers), chain.batch_axis)

    n_taken, boundary, n_layers, batch_axis = committed
    if len(taken) > n_taken:  # a scaling no linear layer absorbed, or a reshape to more axes: to the host
        stop_position, stop_reason = taken[n_taken], "the hardware part must end on a (batch, features) tensor"
        if not chain.settled:
            stop_reason = "no linear layer follows it to fold it into"
    hw_positions = set(taken[:n_taken])
    layers = tuple(chain.layers[:n_layers])
    host_positions = [p for p in range(len(graph.node)) if p not in hw_positions | constant_positions]

    blocking = [p for p in host_positions if graph.node[p].op_type in LAYER_OPS]
    if blocking or not any(isinstance(layer, Dense) for layer in layers):
        raise UnsupportedModelError(
            _unsupported_message(label, graph, stop_position, stop_reason, blocking, bool(layers))
        )

    boundary_type = value_types.get(boundary)
    boundary_dtype = tensor_spec(boundary, boundary_type).dtype if boundary_type else first_spec.dtype
    hardware = HardwarePart(
        input=first_spec,
        output=boundary,
        output_dtype=boundary_dtype,
        output_transposed=batch_axis == 1,
        layers=layers,
        input_scale=chain.input_scale,
        input_offset=chain.input_offset,
        nodes=tuple(graph.node[p].name or f"#{p}" for p in sorted(hw_positions)),
    )
    host = extract_host(inferred, host_positions, sorted(constant_positions), hardware, set(constants))
    nodes = tuple(
        Node(
            position=p,
            name=n.name or f"#{p}",
            op_type=n.op_type,
            domain=n.domain or "ai.onnx",
            inputs=tuple(n.input),
            outputs=tuple(n.output),
            part="hardware" if p in hw_positions else "constant" if p in constant_positions else "host",
        )
        for p, n in enumerate(graph.node)
    )
    return hardware, host, nodes, fixed_batch


def _check_single_output(node: onnx.NodeProto, consumers: dict[str, list[int]], outputs: list[str]) -> None:
    for extra in node.output[1:]:
        if extra and (extra in consumers or extra in outputs):
            raise _Reject(f"its extra output '{extra}' is used; the hardware computes one tensor per layer")


def _take(
    node: onnx.NodeProto,
    chain: _Chain,
    constants: dict[str, np.ndarray],
    fixed_batch: int | None,
    shapes: dict[str, np.ndarray],
) -> None:
    """Fold ``node`` into the chain, or raise ``_Reject`` saying why it cannot run on hardware.

    ``shapes`` holds values computed from ``Shape`` nodes (with ``BATCH``): only a Reshape may use them.
    """
    op = node.op_type
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.domain == "ai.onnx.ml" and op == "Scaler":  # scikit-learn's StandardScaler: (x - offset) * scale
        if chain.rank != 2 or chain.batch_axis != 0:
            raise _Reject("Scaler is supported on (batch, features) tensors")
        offset = _per_feature(np.asarray(attrs.get("offset", [0.0])), chain.feats, 0, "Scaler offset")
        scale = _per_feature(np.asarray(attrs.get("scale", [1.0])), chain.feats, 0, "Scaler scale")
        _affine(chain, scale, -offset * scale)
        return
    if node.domain not in ("", "ai.onnx"):
        raise _Reject(f"operator domain '{node.domain}' has no hardware mapping")
    if op in ("Identity", "Dropout"):
        if op == "Dropout" and (attrs.get("training_mode") or _const(node, 2, constants, optional=True)):
            raise _Reject("Dropout in training mode changes values")
        return
    if op == "Cast":
        if attrs.get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            raise _Reject("only a Cast to float32 or float64 keeps the values the hardware computes")
        return
    if op == "Flatten":
        axis = int(attrs.get("axis", 1))
        if chain.batch_axis != 0 or axis not in (1, 1 - chain.rank):
            raise _Reject(f"Flatten(axis={axis}) does not keep the batch axis")
        chain.rank = 2
        return
    if op == "Reshape":
        _reshape(chain, _const(node, 1, {**constants, **shapes}), fixed_batch)
        return
    if op == "Transpose":
        perm = list(attrs.get("perm", [1, 0]))
        if chain.rank != 2 or perm not in ([1, 0], [0, 1]):
            raise _Reject("only a 2-D transpose is supported")
        if perm == [1, 0]:
            chain.batch_axis = 1 - chain.batch_axis
        return
    if op in ("Relu", "LeakyRelu", "Clip"):
        if not chain.settled:
            raise _Reject("an activation cannot follow a constant scaling that no linear layer absorbed")
        chain.layers.append(_activation(node, attrs, constants))
        chain.open_dense = False
        return
    if op in ("Gemm", "MatMul"):
        _linear(node, attrs, chain, constants)
        return
    if op == "BatchNormalization":
        if attrs.get("training_mode"):
            raise _Reject("BatchNormalization in training mode")
        if chain.rank != 2 or chain.batch_axis != 0:
            raise _Reject("BatchNormalization is supported on (batch, features) tensors")
        scale, bias, mean, var = (_const(node, i, constants).astype(np.float64).ravel() for i in (1, 2, 3, 4))
        factor = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
        _affine(chain, factor, bias - mean * factor)
        return
    if op in ("Add", "Sub", "Mul", "Div"):
        _elementwise_constant(node, chain, constants)
        return
    raise _Reject(f"{op} has no hardware mapping")


def _reshape(chain: _Chain, target: np.ndarray, fixed_batch: int | None) -> None:
    dims = [int(d) for d in np.asarray(target).ravel()]
    if chain.batch_axis != 0 or not dims:
        raise _Reject("Reshape must keep the batch axis first")
    rest = dims[1:]
    if dims[0] == BATCH:  # computed from the input's shape: x.view(x.size(0), -1)
        dims[0] = 0
    if BATCH in dims:
        raise _Reject(f"Reshape moves the batch axis ({dims.index(BATCH)})")
    if dims[0] not in (0, -1) and dims[0] != fixed_batch:
        raise _Reject(f"Reshape to {dims} does not keep the batch axis")
    if rest.count(-1) > 1 or 0 in rest or any(d < -1 for d in rest):
        raise _Reject(f"Reshape to {dims} is not a plain regrouping of the features")
    known = math.prod(d for d in rest if d != -1)
    if dims[0] == -1 and -1 in rest:
        raise _Reject(f"Reshape to {dims} leaves the batch axis ambiguous")
    if (-1 not in rest and known != chain.feats) or (-1 in rest and chain.feats % known):
        raise _Reject(f"Reshape to {dims} does not keep the batch axis ({chain.feats} features per sample)")
    chain.rank = len(dims)


def _activation(node: onnx.NodeProto, attrs: dict[str, object], constants: dict[str, np.ndarray]) -> Activation:
    name = node.name or node.output[0]
    if node.op_type == "Relu":
        return Activation(name, "relu", (name,))
    if node.op_type == "LeakyRelu":
        return Activation(name, "leaky_relu", (name,), alpha=float(attrs.get("alpha", 0.01)))  # type: ignore[arg-type]
    low = _const(node, 1, constants, optional=True)
    high = _const(node, 2, constants, optional=True)
    low_value = float(low) if low is not None else attrs.get("min")  # opset < 11 keeps bounds as attributes
    high_value = float(high) if high is not None else attrs.get("max")
    return Activation(
        name,
        "clip",
        (name,),
        low=None if low_value is None else float(low_value),
        high=None if high_value is None else float(high_value),
    )


def _linear(node: onnx.NodeProto, attrs: dict[str, object], chain: _Chain, constants: dict[str, np.ndarray]) -> None:
    """Gemm in every form and MatMul, with the activation on either side, become one Dense."""
    if chain.rank != 2:
        raise _Reject(f"{node.op_type} needs a (batch, features) input; flatten it first")
    a_const = node.input[0] in constants
    b_const = node.input[1] in constants
    if a_const == b_const:
        raise _Reject(f"{node.op_type} needs exactly one constant (weight) operand")
    if node.op_type == "Gemm":
        trans_a, trans_b = bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0))
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))  # type: ignore[arg-type]
    else:
        trans_a = trans_b = False
        alpha, beta = 1.0, 1.0
    if b_const:  # activation is A: op(A) must be (batch, K) -> output (batch, M)
        if chain.batch_axis != int(trans_a):
            raise _Reject(f"{node.op_type} input layout does not put the batch on the rows")
        weight = constants[node.input[1]].astype(np.float64)
        weight = weight.T if trans_b else weight
        out_batch_axis = 0
    else:  # activation is B: op(B) must be (K, batch) -> output (M, batch)
        if chain.batch_axis != 1 - int(trans_b):
            raise _Reject(f"{node.op_type} input layout does not put the batch on the columns")
        weight = constants[node.input[0]].astype(np.float64)
        weight = weight if trans_a else weight.T
        out_batch_axis = 1
    if weight.ndim != 2 or weight.shape[0] != chain.feats:
        raise _Reject(f"weight of shape {list(weight.shape)} does not match {chain.feats} input features")
    n_out = weight.shape[1]
    bias = np.zeros(n_out)
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        if node.input[2] not in constants:
            raise _Reject("Gemm's C operand must be a constant bias")
        bias = beta * _per_feature(constants[node.input[2]], n_out, out_batch_axis, "Gemm's C")
    weight = alpha * weight
    if chain.pending_scale is not None and chain.pending_offset is not None:
        if not chain.layers:  # before the first layer: the input quantizer applies it (see HardwarePart)
            chain.input_scale, chain.input_offset = chain.pending_scale, chain.pending_offset
        else:  # fold x*s+o into this layer
            bias = bias + chain.pending_offset @ weight
            weight = chain.pending_scale[:, None] * weight
        chain.pending_scale = chain.pending_offset = None
    chain.layers.append(Dense(node.name or node.output[0], weight, bias, (node.name or node.output[0],)))
    chain.feats, chain.batch_axis, chain.open_dense = n_out, out_batch_axis, True


def _elementwise_constant(node: onnx.NodeProto, chain: _Chain, constants: dict[str, np.ndarray]) -> None:
    op = node.op_type
    first_const = node.input[0] in constants
    if first_const == (node.input[1] in constants):
        raise _Reject(f"{op} needs exactly one constant operand to be a per-feature scaling")
    constant = constants[node.input[0 if first_const else 1]]
    if chain.rank != 2 and np.asarray(constant).size != 1:
        raise _Reject(f"{op} by a per-feature constant is supported on (batch, features) tensors")
    value = _per_feature(constants[node.input[0 if first_const else 1]], chain.feats, chain.batch_axis, op)
    ones = np.ones(chain.feats)
    if op == "Add":
        scale, offset = ones, value
    elif op == "Mul":
        scale, offset = value, np.zeros(chain.feats)
    elif op == "Sub":
        scale, offset = (-ones, value) if first_const else (ones, -value)
    else:
        if first_const:
            raise _Reject("a constant divided by the activation is not linear")
        if np.any(value == 0):
            raise _Reject("Div by a constant that holds zeros")
        scale, offset = 1.0 / value, np.zeros(chain.feats)
    _affine(chain, scale, offset)


def _affine(chain: _Chain, scale: np.ndarray, offset: np.ndarray) -> None:
    """``x * scale + offset`` per feature: fold into the open Dense, or hold it for the next one."""
    if len(scale) != chain.feats:
        raise _Reject(f"per-feature constant of length {len(scale)} does not match {chain.feats} features")
    if chain.open_dense:
        last = chain.layers[-1]
        assert isinstance(last, Dense)
        chain.layers[-1] = Dense(last.name, last.weight * scale, last.bias * scale + offset, last.nodes)
    elif chain.pending_scale is not None and chain.pending_offset is not None:
        chain.pending_scale = chain.pending_scale * scale
        chain.pending_offset = chain.pending_offset * scale + offset
    else:
        chain.pending_scale, chain.pending_offset = scale.astype(np.float64), offset.astype(np.float64)


def _per_feature(value: np.ndarray, feats: int, batch_axis: int, what: str) -> np.ndarray:
    """A constant that broadcasts along the batch only, as a vector over the features."""
    array = np.asarray(value, dtype=np.float64)
    target = (1, feats) if batch_axis == 0 else (feats, 1)
    if array.ndim > 2:
        raise _Reject(f"{what} of shape {list(array.shape)} is not a per-feature constant")
    try:
        return np.broadcast_to(array.reshape((1,) * (2 - array.ndim) + array.shape), target).ravel().copy()
    except ValueError:
        raise _Reject(f"{what} of shape {list(array.shape)} is not a per-feature constant") from None


def _const(node: onnx.NodeProto, index: int, constants: dict[str, np.ndarray], optional: bool = False) -> np.ndarray:
    name = node.input[index] if index < len(node.input) else ""
    if not name:
        if optional:
            return None  # type: ignore[return-value]
        raise _Reject(f"its input #{index} is missing")
    if name not in constants:
        raise _Reject(f"its input '{name}' must be a constant")
    return constants[name]


BATCH = -(1 << 40)  # stands for the batch size in shapes computed from the graph (Shape -> Gather -> ...)
_SHAPE_OPS = frozenset({"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Identity"})


def _fold_shape_computations(
    graph: onnx.GraphProto,
    value_types: dict[str, onnx.TypeProto],
    constants: dict[str, np.ndarray],
    positions: set[int],
) -> dict[str, np.ndarray]:
    """Evaluate the small integer subgraphs that exporters build from ``Shape`` (PyTorch's
    ``x.view(x.size(0), -1)``), with ``BATCH`` for the batch size. They are kept apart from the
    constants: the batch size is no number a layer may compute with, only a Reshape target."""
    shapes: dict[str, np.ndarray] = {}
    for position, node in enumerate(graph.node):
        if node.op_type not in _SHAPE_OPS or position in positions or node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type != "Shape" and not any(name in shapes for name in node.input):
            continue  # no shape involved: an ordinary constant, or not known before the input arrives
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        try:
            value = _shape_op(node, attrs, {**constants, **shapes}, value_types)
        except (KeyError, IndexError, ValueError, TypeError):
            continue
        if value is not None:
            shapes[node.output[0]] = value
            positions.add(position)
    return shapes


def _shape_op(
    node: onnx.NodeProto,
    attrs: dict[str, object],
    constants: dict[str, np.ndarray],
    value_types: dict[str, onnx.TypeProto],
) -> np.ndarray | None:
    op = node.op_type
    if op == "Shape":
        spec = tensor_spec(node.input[0], value_types.get(node.input[0]))
        if spec.shape is None or not spec.shape or not all(isinstance(d, int) for d in spec.shape[1:]):
            return None
        head = spec.shape[0] if isinstance(spec.shape[0], int) else BATCH
        dims = np.array([head, *spec.shape[1:]], dtype=np.int64)
        start, end = attrs.get("start"), attrs.get("end")
        return dims[None if start is None else int(start) : None if end is None else int(end)]  # type: ignore[call-overload]
    if not all(name in constants for name in node.input if name):
        return None
    inputs = [np.asarray(constants[name]) if name else None for name in node.input]
    first = inputs[0]
    if first is None or first.dtype.kind not in "iu":
        return None
    axis = int(attrs.get("axis", 0))  # type: ignore[call-overload]

    def ints(index: int, default: object = None) -> list[int] | None:
        value = inputs[index] if index < len(inputs) else None
        if value is None:
            return None if default is None else [int(a) for a in np.ravel(np.asarray(default))]
        return [int(a) for a in value.ravel()]

    if op == "Identity" or (op == "Cast" and attrs.get("to") == onnx.TensorProto.INT64):
        return first.astype(np.int64)
    if op == "Gather":
        indices = inputs[1]
        return None if indices is None else np.take(first, indices, axis=axis)
    if op == "Squeeze":
        axes = ints(1, attrs.get("axes"))
        return np.squeeze(first, axis=None if axes is None else tuple(axes))
    if op == "Unsqueeze":
        result = first
        for position in sorted(ints(1, attrs.get("axes")) or []):
            result = np.expand_dims(result, position)
        return result
    if op == "Concat":
        parts = [np.atleast_1d(value) for value in inputs if value is not None]
        return np.concatenate(parts, axis=axis)
    if op == "Slice" and first.ndim == 1:
        starts, ends, steps = ints(1), ints(2), ints(4, [1])
        if starts and ends and steps:
            return first[starts[0] : ends[0] : steps[0]]
    return None


def _constants(graph: onnx.GraphProto) -> tuple[dict[str, np.ndarray], set[int]]:
    """Values known before any input arrives: initializers, Constant nodes, and Identity nodes of
    those (PyTorch's exporter aliases equal initializers that way), with the positions of such nodes."""
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    positions: set[int] = set()
    for position, node in enumerate(graph.node):
        if node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
            positions.add(position)
        if node.op_type != "Constant" or not node.attribute:
            continue
        positions.add(position)
        attr = node.attribute[0]
        if attr.name == "value":
            constants[node.output[0]] = numpy_helper.to_array(attr.t)
        elif attr.name in ("value_float", "value_int"):
            constants[node.output[0]] = np.array(helper.get_attribute_value(attr))
        elif attr.name in ("value_floats", "value_ints"):
            constants[node.output[0]] = np.array(list(helper.get_attribute_value(attr)))
    return constants, positions


def _unsupported_message(
    label: str, graph: onnx.GraphProto, stop: int | None, reason: str, blocking: list[int], has_layers: bool
) -> str:
    supported = "Supported on hardware: " + ", ".join(HARDWARE_OPS) + "."
    fix = "Change the model so these operators come after the hardware part, or run it on the CPU (--device cpu)."
    if stop is not None:
        node = graph.node[stop]
        head = f"{label}: node '{node.name or f'#{stop}'}' ({node.op_type}, position {stop}) cannot run on the FPGA"
        head += f": {reason}." if reason else "."
    else:
        head = f"{label}: the model has no layer that can run on the FPGA."
    lines = [head]
    later = [p for p in blocking if p != stop]
    if later:
        node = graph.node[later[0]]
        lines.append(
            f"The hardware part ends there, but node '{node.name or f'#{later[0]}'}' ({node.op_type}, "
            f"position {later[0]}) comes after it and needs the hardware."
        )
    elif stop is not None and not has_layers:
        lines.append("Nothing before it is a linear layer, so the hardware part would be empty.")
    lines += [supported, fix]
    return "\n".join(lines)
