"""The host part: every node after the hardware part, as a standalone ONNX model for onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from gatewright.errors import UnsupportedModelError
from gatewright.model.ir import HardwarePart, HostPart


def extract_host(
    inferred: onnx.ModelProto,
    positions: list[int],
    constant_positions: list[int],
    hardware: HardwarePart,
    constants: set[str],
) -> HostPart:
    """The host subgraph: every node after the hardware part, fed by the boundary tensor."""
    graph = inferred.graph
    host_outputs = [o for o in graph.output if o.name != hardware.output]
    if not host_outputs:
        return HostPart(None, (), (), ())
    nodes = [graph.node[p] for p in positions]
    needed = {name for n in nodes for name in _all_inputs(n)}
    taken = set(positions)
    for position in reversed(constant_positions):  # last first: a constant node may need an earlier one
        node = graph.node[position]
        if set(node.output) & needed:
            taken.add(position)
            needed |= set(node.input)
    ordered = [graph.node[p] for p in sorted(taken)]  # graph order: a Shape may read a host tensor
    batch = "batch"
    dims: list[int | str] = [batch, hardware.n_out]
    if hardware.output_transposed:
        dims.reverse()
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(hardware.output_dtype))
    inputs = [helper.make_tensor_value_info(hardware.output, elem, dims)] if hardware.output in needed else []
    inputs += [i for i in graph.input if i.name in needed and i.name not in constants]
    initializers = [init for init in graph.initializer if init.name in needed]
    host_graph = helper.make_graph(ordered, f"{graph.name or 'model'}_host", inputs, host_outputs, initializers)
    model = helper.make_model(
        host_graph,
        opset_imports=list(inferred.opset_import),
        ir_version=inferred.ir_version,
        functions=list(inferred.functions),
        producer_name="gatewright",
    )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:  # e.g. a host node that needs a value from inside the hardware part
        raise UnsupportedModelError(
            f"the part after the hardware ({', '.join(n.name or n.op_type for n in nodes)}) does not form a valid "
            f"model on its own: {str(exc).splitlines()[0]}. Serve the model on the CPU (--device cpu)."
        ) from None
    return HostPart(
        model.SerializeToString(),
        tuple(i.name for i in inputs),
        tuple(o.name for o in host_outputs),
        tuple(n.name for n in nodes),
    )


def _all_inputs(node: onnx.NodeProto) -> set[str]:
    """Inputs of a node and of every subgraph inside it (If / Loop / Scan bodies)."""
    names = set(node.input)
    for attr in node.attribute:
        subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for sub in subgraphs:
            for inner in sub.node:
                names |= _all_inputs(inner)
    return names
