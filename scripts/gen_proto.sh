#!/usr/bin/env bash
# Regenerate the gRPC code of the agent (src/gatewright/agent/agent.proto) and of the inference
# server (src/gatewright/serve/inference.proto). Commit the result; tests/agent/test_proto.py fails
# when the generated files are out of date. grpcio-tools is pinned (requirements.lock) so the
# generated code runs on protobuf 6 and 7 alike: tritonclient[grpc] needs protobuf < 7.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src \
  src/gatewright/agent/agent.proto src/gatewright/serve/inference.proto
# The standard messages live in a private descriptor pool, so the server coexists in one process with
# tritonclient's or KServe's copy of the same "inference" package.
sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/_POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = _POOL.AddSerializedFile(/' \
  src/gatewright/serve/inference_pb2.py
