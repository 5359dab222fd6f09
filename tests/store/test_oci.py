"""The OCI store against real registries (Debian's docker-registry in its own process): one open, one
behind HTTP basic auth."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import oras.client
import pytest

from gatewright.build.bundle import pack
from gatewright.errors import StoreError
from gatewright.store import OciStore, fetch, open_store, pull, push, push_file
from gatewright.store.oci import Location
from tests.store.conftest import OCI_PASSWORD, OCI_USER, Server, bundle_files, free_port

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def get(server: Server, path: str, auth: bool = False) -> tuple[bytes, dict[str, str]]:
    """GET a registry API path directly (not through gatewright)."""
    request = urllib.request.Request(server.url + path, headers={"Accept": ACCEPT})
    if auth:
        token = base64.b64encode(f"{OCI_USER}:{OCI_PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read(), dict(answer.headers)


def manifest(server: Server, repository: str, tag: str) -> tuple[dict[str, Any], str]:
    body, headers = get(server, f"/v2/{repository}/manifests/{tag}")
    return json.loads(body), headers["Docker-Content-Digest"]


@pytest.fixture
def oci_env(clean_env: None, registry: Server) -> Server:
    return registry


def test_round_trip_is_byte_identical(bundle: Path, tmp_path: Path, oci_env: Server, unique: str) -> None:
    repository = f"gatewright/{unique}"
    oci = open_store(f"oci://{oci_env.host}/{repository}")
    assert isinstance(oci, OciStore)
    assert oci.uri == f"oci://{oci_env.host}/{repository}"
    assert not oci.has_bundle("digits-v1")

    ref = oci.put_bundle(bundle, "digits-v1")

    assert ref == f"oci://{oci_env.host}/{repository}:digits-v1"
    assert oci.has_bundle("digits-v1")
    assert oci.bundle_bytes("digits-v1") == pack(bundle)
    got = oci.get_bundle("digits-v1", tmp_path / "out")
    assert bundle_files(got.path) == bundle_files(bundle)
    assert pack(pull(ref, tmp_path / "pulled").path) == pack(bundle)


def test_the_artifact_a_registry_holds(bundle: Path, oci_env: Server, unique: str) -> None:
    repository = f"gatewright/{unique}"
    open_store(f"oci://{oci_env.host}/{repository}").put_bundle(bundle, "digits-v1")
    found, digest = manifest(oci_env, repository, "digits-v1")
    tar = pack(bundle)
    config = (bundle / "manifest.json").read_bytes()
    assert found == {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.gatewright.bundle.v1",
        "config": {
            "mediaType": "application/vnd.gatewright.bundle.config.v1+json",
            "digest": f"sha256:{hashlib.sha256(config).hexdigest()}",
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.gatewright.bundle.layer.v1.tar",
                "digest": f"sha256:{hashlib.sha256(tar).hexdigest()}",
                "size": len(tar),
                "annotations": {"org.opencontainers.image.title": "digits-v1.tar"},
            }
        ],
        "annotations": {"io.gatewright.model": "mlp", "io.gatewright.target": "generic"},
    }
    assert get(oci_env, f"/v2/{repository}/blobs/{found['layers'][0]['digest']}")[0] == tar
    shown = json.loads(get(oci_env, f"/v2/{repository}/blobs/{found['config']['digest']}")[0])
    assert shown["model"]["name"] == "mlp" and shown["target"] == "generic"
    tags = json.loads(get(oci_env, f"/v2/{repository}/tags/list")[0])
    assert tags == {"name": repository, "tags": ["digits-v1"]}

    # the same bundle pushed again gives the same manifest: a push is reproducible
    open_store(f"oci://{oci_env.host}/{repository}").put_bundle(bundle, "digits-v1")
    assert manifest(oci_env, repository, "digits-v1")[1] == digest


def test_an_oras_client_reads_what_gatewright_pushed(
    bundle: Path, tmp_path: Path, oci_env: Server, unique: str
) -> None:
    push(bundle, f"oci://{oci_env.host}/gatewright/{unique}:digits-v1")
    client = oras.client.OrasClient(hostname=oci_env.host, insecure=True)
    files = client.pull(target=f"{oci_env.host}/gatewright/{unique}:digits-v1", outdir=str(tmp_path))
    assert files == [str(tmp_path / "digits-v1.tar")]
    assert (tmp_path / "digits-v1.tar").read_bytes() == pack(bundle)


def test_push_and_pull_by_tag_and_digest(bundle: Path, tmp_path: Path, oci_env: Server, unique: str) -> None:
    ref = push(bundle, f"oci://{oci_env.host}/team.a/{unique}:{'ab' * 32}")
    assert ref == f"oci://{oci_env.host}/team.a/{unique}:{'ab' * 32}"
    digest = manifest(oci_env, f"team.a/{unique}", "ab" * 32)[1]
    by_digest = pull(f"oci://{oci_env.host}/team.a/{unique}@{digest}", tmp_path / "by-digest")
    assert bundle_files(by_digest.path) == bundle_files(bundle)
    assert push(bundle, f"oci://{oci_env.host}/{unique}") == f"oci://{oci_env.host}/{unique}:latest"
    assert pack(pull(f"oci://{oci_env.host}/{unique}", tmp_path / "latest").path) == pack(bundle)
    with pytest.raises(StoreError, match="push to a tag, not a digest"):
        push(bundle, f"oci://{oci_env.host}/{unique}@{digest}")


def test_missing_bundle_names_the_reference(tmp_path: Path, oci_env: Server, unique: str) -> None:
    oci = open_store(f"oci://{oci_env.host}/gatewright/{unique}")
    ref = f"oci://{oci_env.host}/gatewright/{unique}:nope"
    with pytest.raises(StoreError) as error:
        oci.get_bundle("nope", tmp_path / "out")
    assert str(error.value).startswith(f"{ref}: no bundle named 'nope' in the store oci://{oci_env.host}/gatewright/")
    assert not (tmp_path / "out").exists()
    with pytest.raises(StoreError, match=f"^{ref}: no such artifact in the registry"):
        pull(ref, tmp_path / "out")
    with pytest.raises(StoreError, match="no such artifact"):
        fetch(ref, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_push_file_and_fetch(tmp_path: Path, oci_env: Server, unique: str) -> None:
    model = tmp_path / "digits.onnx"
    model.write_bytes(b"\x08\x07onnx" * 5000)
    ref = push_file(model, f"oci://{oci_env.host}/models/{unique}:v1")
    assert ref == f"oci://{oci_env.host}/models/{unique}:v1"
    found, _ = manifest(oci_env, f"models/{unique}", "v1")
    assert found["artifactType"] == "application/vnd.gatewright.model.v1"
    assert found["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": f"sha256:{hashlib.sha256(b'{}').hexdigest()}",
        "size": 2,
    }
    [layer] = found["layers"]
    assert layer["mediaType"] == "application/vnd.onnx.model"
    assert layer["annotations"] == {"org.opencontainers.image.title": "digits.onnx"}
    assert fetch(ref, tmp_path / "out" / "m.onnx").read_bytes() == model.read_bytes()

    calibration = tmp_path / "calib.npy"
    calibration.write_bytes(b"\x93NUMPY" + bytes(range(256)))
    push_file(calibration, f"oci://{oci_env.host}/models/{unique}:calib")
    assert manifest(oci_env, f"models/{unique}", "calib")[0]["layers"][0]["mediaType"] == "application/octet-stream"
    assert (
        fetch(f"oci://{oci_env.host}/models/{unique}:calib", tmp_path / "c.npy").read_bytes()
        == calibration.read_bytes()
    )

    # a model is not a bundle
    with pytest.raises(
        StoreError, match=r"not a gatewright bundle \(artifact type application/vnd.gatewright.model.v1"
    ):
        open_store(f"oci://{oci_env.host}/models/{unique}").get_bundle("v1", tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("oci://127.0.0.1:5000", "not an OCI reference; write oci://HOST"),
        ("oci://127.0.0.1:5000/Upper/Case", "'Upper/Case' is not a valid repository name"),
        ("oci://127.0.0.1:5000/repo:bad/tag", "not a valid repository name"),
        ("oci://127.0.0.1:5000/repo:-bad", "bundle name '-bad' is not valid"),
        ("oci://127.0.0.1:5000/repo@md5:abc", "not a digest"),
        ("oci://127.0.0.1:5000/repo?x=1", "takes no '\\?' or '#' part"),
    ],
)
def test_bad_references(uri: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Location.parse(uri)


def test_a_store_is_a_repository_not_a_tag() -> None:
    with pytest.raises(StoreError, match="an OCI store is a repository; drop the ':tag'"):
        open_store("oci://127.0.0.1:5000/gatewright/bundles:v1")


def test_unreachable_registry_fails_fast(bundle: Path, tmp_path: Path, oci_env: Server) -> None:
    host = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"cannot reach the registry at http://{host} \\(connection refused\\)"):
        open_store(f"oci://{host}/gatewright").put_bundle(bundle, "x")
    with pytest.raises(StoreError, match="cannot reach the registry"):
        pull(f"oci://{host}/gatewright:x", tmp_path / "out")
    assert time.monotonic() - started < 5  # oras-py alone would retry for minutes


def test_basic_auth_with_credentials_from_the_environment(
    bundle: Path, tmp_path: Path, clean_env: None, auth_registry: Server, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    uri = f"oci://{auth_registry.host}/private/{unique}"
    with pytest.raises(StoreError, match="refused access; set GATEWRIGHT_OCI_USERNAME and GATEWRIGHT_OCI_PASSWORD"):
        open_store(uri).put_bundle(bundle, "v1")
    monkeypatch.setenv("GATEWRIGHT_OCI_USERNAME", OCI_USER)
    monkeypatch.setenv("GATEWRIGHT_OCI_PASSWORD", OCI_PASSWORD)
    oci = open_store(uri)
    assert oci.put_bundle(bundle, "v1") == f"{uri}:v1"
    assert oci.has_bundle("v1") and not oci.has_bundle("v2")
    assert oci.bundle_bytes("v1") == pack(bundle)
    assert pack(pull(f"{uri}:v1", tmp_path / "out").path) == pack(bundle)
    monkeypatch.delenv("GATEWRIGHT_OCI_PASSWORD")
    with pytest.raises(StoreError, match="give both a user name and a password"):
        open_store(uri)


def test_credentials_from_the_docker_config(bundle: Path, clean_env: None, auth_registry: Server, unique: str) -> None:
    token = base64.b64encode(f"{OCI_USER}:{OCI_PASSWORD}".encode()).decode()
    config = Path(os.environ["HOME"]) / ".docker" / "config.json"  # clean_env's fresh HOME
    config.parent.mkdir()
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    oci = open_store(f"oci://{auth_registry.host}/docker-config/{unique}")
    assert oci.put_bundle(bundle, "v1").endswith(f"/docker-config/{unique}:v1")
    assert oci.bundle_bytes("v1") == pack(bundle)


def test_credentials_stay_out_of_uris_messages_and_logs(
    bundle: Path,
    tmp_path: Path,
    clean_env: None,
    auth_registry: Server,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    unique: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [OCI_PASSWORD, base64.b64encode(f"{OCI_USER}:{OCI_PASSWORD}".encode()).decode()]
    oci = open_store(f"oci://{OCI_USER}:{OCI_PASSWORD}@{auth_registry.host}/private/{unique}")
    assert oci.uri == f"oci://{auth_registry.host}/private/{unique}"
    assert isinstance(oci, OciStore)
    assert OCI_PASSWORD not in repr(oci) and OCI_PASSWORD not in repr(oci.location)
    ref = oci.put_bundle(bundle, "v1")
    assert ref == f"oci://{auth_registry.host}/private/{unique}:v1"
    assert oci.bundle_bytes("v1") == pack(bundle)
    assert get(auth_registry, f"/v2/private/{unique}/tags/list", auth=True)[0]  # the push did go through auth

    messages = []
    wrong = f"oci://{OCI_USER}:wrong-{OCI_PASSWORD}@{auth_registry.host}/private/{unique}"
    for call in (
        lambda: oci.get_bundle("missing", tmp_path / "out"),
        lambda: open_store(wrong).bundle_bytes("v1"),
        lambda: open_store(wrong).put_bundle(bundle, "v2"),
        lambda: pull(f"{wrong}:v1", tmp_path / "out"),
    ):
        with pytest.raises(StoreError) as error:
            call()
        messages.append(str(error.value))
    assert "refused access" in messages[1] and "refused access" in messages[3]
    assert caplog.records  # requests and urllib3 logged at DEBUG...
    out, err = capfd.readouterr()
    for text in [*messages, caplog.text, out, err]:
        for secret in secrets:
            assert secret not in text  # ...but no credential anywhere
