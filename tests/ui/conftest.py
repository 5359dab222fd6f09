"""A real ``gatewright control`` process on free ports and a headless Chromium driven by Playwright,
for the web UI's end-to-end tests. Screenshots and the control plane's log go to test-artifacts/ui/."""

from __future__ import annotations

import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
# control plane on http://HOST:PORT (inference REST http://HOST:HP, gRPC HOST:GP); token in DIR/token
FIRST_LINE = re.compile(
    r"control plane on (?P<url>http://\S+) \(inference REST (?P<rest>http://[^,\s]+), gRPC (?P<grpc>[^)\s]+)\)"
)
START_TIMEOUT_S = 120.0


@dataclass
class ControlPlane:
    url: str
    rest: str
    grpc: str
    token: str
    data: Path
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        """One API request with the bearer token; the status and the decoded JSON (None if empty)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        answer = httpx.request(method, self.url + path, json=body, headers=headers, timeout=60, **kwargs)
        return answer.status_code, answer.json() if answer.content else None

    def upload(self, path: Path) -> str:
        """Upload a file (POST /api/v1/uploads) and return its URI."""
        status, body = self.call("POST", "/api/v1/uploads", files={"file": (path.name, path.read_bytes())})
        assert status == 201, body
        return str(body["uri"])


def chromium_path() -> str | None:
    for candidate in (os.environ.get("GATEWRIGHT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[ControlPlane]:
    """``gatewright control`` on free ports, with a fresh data folder and firmware cache."""
    root = tmp_path_factory.mktemp("control")
    token = secrets.token_urlsafe(24)
    log = (artifacts / "control-plane.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gatewright.cli",
            "control",
            "--port",
            "0",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--data",
            str(root / "data"),
            "--token",
            token,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "GATEWRIGHT_CACHE": str(root / "cache"), "COLUMNS": "400"},
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def drain() -> None:  # keeps reading, so that a chatty process never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    try:
        first = lines.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        first = None
    match = FIRST_LINE.search(first.strip()) if first else None
    if not match:
        _stop(process)
        log.close()
        raise AssertionError(
            f"gatewright control did not report its address within {START_TIMEOUT_S:.0f} s: first line {first!r}\n"
            f"{(artifacts / 'control-plane.log').read_text()[-4000:]}"
        )
    plane = ControlPlane(match["url"], match["rest"], match["grpc"], token, root / "data", process, output)
    yield plane
    _stop(process)
    log.write("".join(output))
    log.close()


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    if executable is None:
        pytest.skip("needs Chromium (/usr/bin/chromium, or GATEWRIGHT_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def page(browser: Any, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; a screenshot when the test fails, and no
    uncaught JavaScript error allowed."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    opened.on(
        "console",
        lambda msg: (
            errors.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text  # 401s the page expects
            else None
        ),
    )
    yield opened
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        opened.screenshot(path=str(artifacts / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()
    if report is not None and report.passed:
        assert not errors, f"the page logged errors: {errors}"
