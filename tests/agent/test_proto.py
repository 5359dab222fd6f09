"""The committed gRPC code is what agent.proto generates (scripts/gen_proto.sh regenerates it)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import gatewright.agent

AGENT = Path(gatewright.agent.__file__).parent
GENERATED = ("agent_pb2.py", "agent_pb2.pyi", "agent_pb2_grpc.py")


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    package = tmp_path / "gatewright" / "agent"
    package.mkdir(parents=True)
    shutil.copy(AGENT / "agent.proto", package / "agent.proto")
    args = ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}"]
    args += [f"--grpc_python_out={tmp_path}", str(package / "agent.proto")]
    assert protoc.main(args) == 0, f"protoc failed ({sys.executable})"
    stale = [name for name in GENERATED if (package / name).read_text() != (AGENT / name).read_text()]
    assert not stale, f"{', '.join(stale)} out of date with agent.proto: run scripts/gen_proto.sh and commit"
