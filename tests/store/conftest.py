"""Real servers for the store tests, each in its own process on a free port and stopped at the end:
an S3-protocol server (moto_server), two OCI Distribution registries (Debian's docker-registry: one
open, one behind htpasswd basic auth) and a static HTTP server; and one small real bundle."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import pytest

from gatewright.build.pipeline import build
from tests import onnx_models as om

BUCKET = "gatewright-test"
OCI_USER = "alice"
OCI_PASSWORD = "s3cret-Pa55word"
S3_SECRET = "gatewright-test-secret-key-0123456789"
INSTALL_REGISTRY = "apt-get install docker-registry"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:PORT
    root: Path  # the server's files (data, config, log)

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(command: list[str], url: str, ready_path: str, root: Path, timeout: float = 30.0) -> Server:
    """Run ``command`` (its output to ROOT/server.log) until GET ``url + ready_path`` answers 200."""
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"{command[0]} exited with status {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + ready_path, timeout=2) as answer:
                if answer.status == 200:
                    return Server(process, url, root)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"{command[0]} did not answer at {url + ready_path} in {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle (a 6-12-4 MLP built up to quantize), plus a nested file and an executable one as
    later build steps add them."""
    work = tmp_path_factory.mktemp("bundle")
    (work / "mlp.onnx").write_bytes(om.pytorch_mlp([6, 12, 4], seed=3))
    np.save(work / "calib.npy", om.rng(1).normal(size=(64, 6)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build(work / "mlp.onnx", work / "mlp", until="quantize", calibration=work / "calib.npy")
    (work / "mlp" / "rtl").mkdir()
    (work / "mlp" / "rtl" / "gw_core.v").write_text("module gw_core(input clk); endmodule\n")
    (work / "mlp" / "reports").mkdir()
    (work / "mlp" / "reports" / "run.sh").write_text("#!/bin/sh\necho ok\n")
    (work / "mlp" / "reports" / "run.sh").chmod(0o755)
    return work / "mlp"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """moto's S3-protocol server with the bucket ``gatewright-test``."""
    root = tmp_path_factory.mktemp("moto")
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    server = start([str(moto), "-H", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}", "/", root)
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        s3.create_bucket(Bucket=BUCKET)
        yield server
    finally:
        stop(server.process)


def _registry(root: Path, htpasswd: str | None = None) -> Server:
    executable = shutil.which("docker-registry")
    if executable is None:
        pytest.fail(
            "docker-registry is not installed: the OCI store tests need Debian's OCI Distribution registry; "
            f"install it with `{INSTALL_REGISTRY}` (scripts/test.sh does)"
        )
    port = free_port()
    auth = ""
    if htpasswd is not None:
        (root / "htpasswd").write_text(htpasswd)
        auth = f"auth:\n  htpasswd:\n    realm: gatewright-test\n    path: {root / 'htpasswd'}\n"
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    ready = "/" if htpasswd else "/v2/"  # behind auth /v2/ answers 401
    return start([executable, "serve", str(root / "config.yml")], f"http://127.0.0.1:{port}", ready, root)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An open OCI Distribution registry."""
    server = _registry(tmp_path_factory.mktemp("registry"))
    yield server
    stop(server.process)


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A registry that wants HTTP basic auth (user ``alice``, password ``OCI_PASSWORD``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt: the only hash docker-registry's htpasswd accepts

    hashed = crypt.crypt(OCI_PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    assert hashed.startswith("$2")
    server = _registry(tmp_path_factory.mktemp("auth-registry"), f"{OCI_USER}:{hashed}\n")
    yield server
    stop(server.process)


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python -m http.server`` over a folder (``server.root / "files"``)."""
    root = tmp_path_factory.mktemp("http")
    (root / "files").mkdir()
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", "files"]
    server = start(command, f"http://127.0.0.1:{port}", "/", root)
    yield server
    stop(server.process)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No store setting or credential from the machine running the tests (nor its ~/.aws, ~/.docker)."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "GATEWRIGHT_OCI_", "GATEWRIGHT_S3_", "ORAS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def s3_env(clean_env: None, s3_server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The environment a user sets for an S3-protocol server of their own."""
    monkeypatch.setenv("GATEWRIGHT_S3_ENDPOINT", s3_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "gatewright-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_server


@pytest.fixture
def unique() -> str:
    """A fresh name, so that tests sharing a server do not see each other's objects."""
    return uuid.uuid4().hex[:12]


def bundle_files(path: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file of a bundle directory: its bytes and whether it is executable."""
    return {
        file.relative_to(path).as_posix(): (file.read_bytes(), os.access(file, os.X_OK))
        for file in sorted(path.rglob("*"))
        if file.is_file()
    }
