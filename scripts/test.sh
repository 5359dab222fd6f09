#!/usr/bin/env bash
# Set up (if needed), then lint, type-check and run the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# PyTorch (CPU) for the real-exporter tests; a machine without its wheel skips those tests.
.venv/bin/python -m pip install --quiet -r requirements-torch.lock \
  || echo "note: PyTorch could not be installed here; tests of real PyTorch exports will be skipped" >&2
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/pytest "$@"
