"""Model intake: ONNX in, a checked and partitioned ``ModelGraph`` out."""

from __future__ import annotations

from pathlib import Path

from gatewright.model.ir import (
    Activation,
    Dense,
    HardwarePart,
    HostPart,
    Layer,
    ModelGraph,
    Node,
    TensorSpec,
)
from gatewright.model.load import LoadedModel, load_model, tensor_spec
from gatewright.model.partition import HARDWARE_OPS, partition


def intake(source: str | Path | bytes, label: str | None = None) -> ModelGraph:
    """Load, check and partition a model (from a path or bytes)."""
    loaded = load_model(source, label)
    hardware, host, nodes, fixed_batch = partition(loaded.inferred, loaded.label)
    default_opset = next((o.version for o in loaded.proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    producer = f"{loaded.proto.producer_name} {loaded.proto.producer_version}".strip()
    return ModelGraph(
        name=loaded.name,
        sha256=loaded.sha256,
        source=loaded.source,
        opset=default_opset,
        producer=producer,
        inputs=loaded.inputs,
        outputs=loaded.outputs,
        nodes=nodes,
        hardware=hardware,
        host=host,
        fixed_batch=fixed_batch,
    )


__all__ = [
    "HARDWARE_OPS",
    "Activation",
    "Dense",
    "HardwarePart",
    "HostPart",
    "Layer",
    "LoadedModel",
    "ModelGraph",
    "Node",
    "TensorSpec",
    "intake",
    "load_model",
    "tensor_spec",
]
