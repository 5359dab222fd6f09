"""``fetch``: one file from file:// (inside the allowed roots only), http(s):// (a real server), and the
redaction of URIs. (s3:// and oci:// are fetched in test_s3.py and test_oci.py.)"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest

from gatewright.build.bundle import pack
from gatewright.errors import StoreError
from gatewright.store import fetch, pull, redact
from tests.store.conftest import Server, bundle_files, free_port


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed root holding model.onnx, and a folder outside it holding secret.npy."""
    allowed, outside = tmp_path / "models", tmp_path / "private"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "model.onnx").write_bytes(b"model-bytes")
    (outside / "secret.npy").write_bytes(b"secret-bytes")
    return allowed, outside


def test_a_file_inside_the_allowed_roots(roots: tuple[Path, Path], tmp_path: Path) -> None:
    allowed, outside = roots
    dest = tmp_path / "work" / "model.onnx"
    assert fetch((allowed / "model.onnx").as_uri(), dest, [outside, allowed]) == dest
    assert dest.read_bytes() == b"model-bytes"
    (allowed / "sub").mkdir()
    os.symlink(allowed / "model.onnx", allowed / "sub" / "alias.onnx")  # a link that stays inside is fine
    assert fetch(str(allowed / "sub" / "alias.onnx"), tmp_path / "b", [allowed]).read_bytes() == b"model-bytes"
    assert fetch((outside / "secret.npy").as_uri(), tmp_path / "c").read_bytes() == b"secret-bytes"  # no roots


@pytest.mark.parametrize("how", ["direct", "symlink", "dotdot", "symlinked-folder"])
def test_a_file_outside_the_allowed_roots_is_refused(roots: tuple[Path, Path], tmp_path: Path, how: str) -> None:
    allowed, outside = roots
    if how == "direct":
        uri = (outside / "secret.npy").as_uri()
    elif how == "symlink":
        os.symlink(outside / "secret.npy", allowed / "innocent.onnx")
        uri = (allowed / "innocent.onnx").as_uri()
    elif how == "dotdot":
        uri = f"file://{allowed}/../private/secret.npy"
    else:
        os.symlink(outside, allowed / "shared")
        uri = f"file://{allowed}/shared/secret.npy"
    dest = tmp_path / "work" / "x"
    with pytest.raises(StoreError) as error:
        fetch(uri, dest, [allowed])
    message = str(error.value)
    assert message.startswith(f"{uri}: resolves to {outside / 'secret.npy'}, outside the allowed roots ({allowed})")
    assert message.endswith(f"(allow it with --allow-root {outside})")
    assert not dest.exists()


def test_a_missing_or_odd_file(roots: tuple[Path, Path], tmp_path: Path) -> None:
    allowed, _ = roots
    with pytest.raises(StoreError, match="no such file"):
        fetch((allowed / "absent.onnx").as_uri(), tmp_path / "x", [allowed])
    with pytest.raises(StoreError, match="not a regular file"):
        fetch(allowed.as_uri(), tmp_path / "x", [allowed])
    with pytest.raises(StoreError, match="needs an absolute path"):
        fetch("file:relative/model.onnx", tmp_path / "x")
    with pytest.raises(StoreError, match=r"cannot fetch from 'ftp://'; a file is named by file:///PATH, s3://"):
        fetch("ftp://example.org/model.onnx", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_http_downloads(http_server: Server, tmp_path: Path, bundle: Path) -> None:
    files = http_server.root / "files"
    payload = os.urandom(300_000)
    (files / "model.onnx").write_bytes(payload)
    dest = tmp_path / "dl" / "model.onnx"
    assert fetch(f"{http_server.url}/model.onnx", dest) == dest
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.onnx"]

    # http.server answers a folder without its '/' with a redirect (301) to the folder
    (files / "folder").mkdir()
    with urllib.request.urlopen(f"{http_server.url}/folder/", timeout=10) as answer:
        listing = answer.read()
    assert fetch(f"{http_server.url}/folder", tmp_path / "listing.html").read_bytes() == listing

    # a bundle archive can be pulled over http too
    (files / "mlp.tar").write_bytes(pack(bundle))
    assert bundle_files(pull(f"{http_server.url}/mlp.tar", tmp_path / "pulled").path) == bundle_files(bundle)


def test_http_errors(http_server: Server, tmp_path: Path) -> None:
    (http_server.root / "files" / "big.bin").write_bytes(b"x" * 5000)
    dest = tmp_path / "x"
    url = f"http://bob:hunter2@{http_server.host}/missing.onnx?token=abc123&version=2"
    with pytest.raises(StoreError) as error:
        fetch(url, dest)
    assert str(error.value) == (
        f"http://{http_server.host}/missing.onnx?token=REDACTED&version=2: the server answered 404 "
        "File not found, not 200; check the URL (and that it needs no login)"
    )
    with pytest.raises(StoreError, match=r"more than the limit of 0\.00390625 MiB"):
        fetch(f"{http_server.url}/big.bin", dest, max_bytes=4096)
    closed = f"http://127.0.0.1:{free_port()}/model.onnx"
    with pytest.raises(StoreError, match=f"^{closed}: cannot connect to the server"):
        fetch(closed, dest)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []  # no partial file either


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("oci://alice:pw@reg.example:5000/repo:v1", "oci://reg.example:5000/repo:v1"),
        ("s3://AKID:SECRET@bucket/key", "s3://bucket/key"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKID%2F2024&X-Amz-Signature=abc&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Expires=60",
        ),
        ("https://host/m.onnx?access_token=t&sig=s&v=1", "https://host/m.onnx?access_token=REDACTED&sig=REDACTED&v=1"),
        ("https://user@host/m.onnx", "https://host/m.onnx"),
        ("/plain/path", "/plain/path"),
        ("file:///a/b.tar", "file:///a/b.tar"),
    ],
)
def test_redact(uri: str, shown: str) -> None:
    assert redact(uri) == shown
