#!/usr/bin/env bash
# Regenerate the agent's gRPC code from src/gatewright/agent/agent.proto (commit the result;
# tests/agent/test_proto.py fails when the generated files are out of date).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src \
  src/gatewright/agent/agent.proto
