#!/usr/bin/env bash
# Set up (if needed), then lint, type-check and run the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Real servers and tools for the tests: an OCI registry, PostgreSQL, headless Chromium, promtool.
need=""
command -v docker-registry >/dev/null 2>&1 || need="$need docker-registry"
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v promtool >/dev/null 2>&1 || need="$need prometheus"  # promtool checks the Grafana dashboard's queries
{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || need="$need postgresql"
if [ -n "$need" ]; then
  echo "test: installing$need (Debian packages the tests run for real)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null \
    || { echo "error: install$need (Debian: apt-get install$need)" >&2; exit 2; }
fi
# PyTorch (CPU) for the real-exporter tests; a machine without its wheel skips those tests.
.venv/bin/python -m pip install --quiet -r requirements-torch.lock \
  || echo "note: PyTorch could not be installed here; tests of real PyTorch exports will be skipped" >&2
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/pytest "$@"
