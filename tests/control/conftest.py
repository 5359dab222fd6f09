"""A real control plane (``gatewright control`` in its own process), a real PostgreSQL server, and the
digits model the deployments serve."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gatewright.control.client import ControlClient
from tests.store.conftest import registry  # noqa: F401 - a real OCI registry, shared with the store tests

GATEWRIGHT = [sys.executable, "-m", "gatewright"]
TOKEN = "test-token-0123456789"


@dataclass
class Digits:
    model: Path
    calibration: Path
    x: np.ndarray
    y: np.ndarray
    folder: Path


@pytest.fixture(scope="session")
def digits(
    tmp_path_factory: pytest.TempPathFactory, sklearn_digits: dict[bool, tuple[bytes, object, object]]
) -> Digits:
    folder = tmp_path_factory.mktemp("models")
    data, x, y = sklearn_digits[False]
    model = folder / "digits.onnx"
    model.write_bytes(data)
    calibration = folder / "calibration.npy"
    np.save(calibration, np.asarray(x, dtype=np.float32)[:200])
    return Digits(model, calibration, np.asarray(x, dtype=np.float32), np.asarray(y), folder)


def spec(name: str, model: Path, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {"model": {"uri": model.as_uri()}, "engine": "fpga", "target": "generic"}
    body.update(fields)
    return {"apiVersion": "gatewright/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": body}


@dataclass
class ControlPlane:
    process: subprocess.Popen[str]
    url: str
    rest: str
    grpc: str
    data: Path
    log: Path
    args: list[str]
    banner: str  # the first line it printed

    def client(self) -> ControlClient:
        return ControlClient(self.url, TOKEN)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GATEWRIGHT_CONTROL_URL": self.url, "GATEWRIGHT_CONTROL_TOKEN": TOKEN, "COLUMNS": "300"}
        result = subprocess.run([*GATEWRIGHT, *args], capture_output=True, text=True, env=env, timeout=900)
        if check and result.returncode != 0:
            raise AssertionError(f"gatewright {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def wait(self, name: str, phase: str = "Ready", timeout: float = 600.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                status = client.get(name)
                if status["phase"] == phase and status["observed_generation"] == status["generation"]:
                    return status
                if status["phase"] == "Failed" and phase != "Failed":
                    raise AssertionError(f"{name} failed: {status['reason']}\n{client.logs(name)}")
                if self.process.poll() is not None:
                    raise AssertionError(f"the control plane exited:\n{self.log.read_text()}")
                time.sleep(0.2)
        raise AssertionError(f"{name} is not {phase} within {timeout} s: {status}\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        return self.process.wait(timeout=60)


def start_control(data: Path, *args: str, env: dict[str, str] | None = None) -> ControlPlane:
    """``gatewright control`` on free ports; returns once its first line names them."""
    data.mkdir(parents=True, exist_ok=True)
    log = data.parent / f"{data.name}-control.log"
    argv = [*GATEWRIGHT, "control", "--data", str(data), "--port", "0", "--http-port", "0", "--grpc-port", "0"]
    argv += ["--token", TOKEN, *args]
    with log.open("a") as errors:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env={**os.environ, **(env or {}), "COLUMNS": "400"},
            start_new_session=True,
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"control plane on (http://\S+) \(inference REST (http://\S+), gRPC (\S+)\)", line)
    if not match:
        process.kill()
        raise AssertionError(f"the control plane did not start: {line!r}\n{log.read_text()}")
    return ControlPlane(process, match.group(1), match.group(2), match.group(3), data, log, list(args), line)


@pytest.fixture
def control_factory() -> Iterator[list[ControlPlane]]:
    """Control planes a test starts; stopped at its end whatever happens."""
    started: list[ControlPlane] = []
    yield started
    for plane in started:
        with contextlib.suppress(Exception):
            plane.stop(signal.SIGKILL)


# -- PostgreSQL ---------------------------------------------------------------------------------------
def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise AssertionError(
            f"PostgreSQL's {name} is not installed; scripts/test.sh installs it (apt-get install postgresql)"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server in a temporary folder, with a password (to check it never leaks)."""
    import psycopg

    # not under pytest's tmp folder: that is private to root, and PostgreSQL runs as its own user
    root = Path(tempfile.mkdtemp(prefix="gatewright-postgres-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    password = "pg-secret-5f2e"
    (root / "pw").write_text(password + "\n")
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(root / "pw", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, _pg_bin("initdb"), "-D", str(data), "-U", "gw", "--pwfile", str(root / "pw"), "-A", "scram-sha-256"],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    server = subprocess.Popen(
        [*run_as, _pg_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets), "-h", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=(root / "server.log").open("w"),
        start_new_session=True,
    )
    admin = f"postgresql://gw:{password}@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute("CREATE DATABASE gatewright")
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise AssertionError(f"PostgreSQL did not start:\n{(root / 'server.log').read_text()}") from None
            time.sleep(0.2)
    yield f"postgresql+psycopg://gw:{password}@127.0.0.1:{port}/gatewright"
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    shutil.rmtree(root, ignore_errors=True)
