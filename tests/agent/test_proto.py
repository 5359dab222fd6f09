"""The committed gRPC code is what the .proto files generate (scripts/gen_proto.sh regenerates it)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import gatewright

SRC = Path(gatewright.__file__).parent
PROTOS = {
    "agent/agent.proto": ("agent_pb2.py", "agent_pb2.pyi", "agent_pb2_grpc.py"),
    "serve/inference.proto": ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py"),
}
# scripts/gen_proto.sh moves the inference messages into a private descriptor pool (the same edit here)
POOL_EDIT = (
    "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(",
    "_POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = _POOL.AddSerializedFile(",
)


@pytest.mark.parametrize("proto", sorted(PROTOS))
def test_generated_code_is_up_to_date(tmp_path: Path, proto: str) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    package = tmp_path / "gatewright" / Path(proto).parent
    package.mkdir(parents=True)
    shutil.copy(SRC / proto, package / Path(proto).name)
    args = ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}"]
    args += [f"--grpc_python_out={tmp_path}", str(package / Path(proto).name)]
    assert protoc.main(args) == 0, f"protoc failed ({sys.executable})"
    if proto.startswith("serve/"):
        generated = package / "inference_pb2.py"
        generated.write_text(generated.read_text().replace(*POOL_EDIT))
    committed = SRC / Path(proto).parent
    stale = [name for name in PROTOS[proto] if (package / name).read_text() != (committed / name).read_text()]
    assert not stale, f"{', '.join(stale)} out of date with {proto}: run scripts/gen_proto.sh and commit"


def test_the_inference_messages_coexist_with_tritonclients_copy() -> None:
    """Both register package "inference"; a private pool keeps them from clashing in one process."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    from gatewright.serve import inference_pb2

    ours = inference_pb2.ModelInferRequest(model_name="m", raw_input_contents=[b"\x00\x01"])
    ours.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.model_name == "m" and list(theirs.inputs[0].shape) == [1, 2]
    assert theirs.raw_input_contents[0] == b"\x00\x01"
