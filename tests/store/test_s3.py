"""The S3 store against a real S3-protocol server (moto_server in its own process)."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from gatewright.build.bundle import pack
from gatewright.errors import StoreError
from gatewright.store import S3Store, fetch, open_store, pull, push, push_file
from tests.store.conftest import BUCKET, S3_SECRET, Server, bundle_files, free_port


def raw_s3(server: Server) -> Any:
    return boto3.client(
        "s3", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def test_round_trip_is_byte_identical(bundle: Path, tmp_path: Path, s3_env: Server, unique: str) -> None:
    s3 = open_store(f"s3://{BUCKET}/{unique}/models/")
    assert isinstance(s3, S3Store)
    assert s3.uri == f"s3://{BUCKET}/{unique}/models"
    assert not s3.has_bundle("digits-v1")

    ref = s3.put_bundle(bundle, "digits-v1")

    assert ref == f"s3://{BUCKET}/{unique}/models/bundles/digits-v1.tar"
    assert s3.has_bundle("digits-v1")
    assert s3.bundle_bytes("digits-v1") == pack(bundle)
    stored = raw_s3(s3_env).get_object(Bucket=BUCKET, Key=f"{unique}/models/bundles/digits-v1.tar")
    assert stored["Body"].read() == pack(bundle)
    assert stored["ContentType"] == "application/x-tar"
    assert stored["Metadata"] == {
        "sha256": hashlib.sha256(pack(bundle)).hexdigest(),
        "model": "mlp",
        "target": "generic",
    }
    got = s3.get_bundle("digits-v1", tmp_path / "out")
    assert bundle_files(got.path) == bundle_files(bundle)
    assert pack(pull(ref, tmp_path / "pulled").path) == pack(bundle)


def test_a_store_at_the_bucket_root(bundle: Path, s3_env: Server) -> None:
    s3 = open_store(f"s3://{BUCKET}")
    assert s3.uri == f"s3://{BUCKET}"
    assert s3.put_bundle(bundle, "root-v1") == f"s3://{BUCKET}/bundles/root-v1.tar"
    assert s3.bundle_bytes("root-v1") == pack(bundle)


def test_missing_bundle_and_bucket(tmp_path: Path, s3_env: Server, unique: str) -> None:
    s3 = open_store(f"s3://{BUCKET}/{unique}")
    ref = f"s3://{BUCKET}/{unique}/bundles/nope.tar"
    with pytest.raises(StoreError) as error:
        s3.get_bundle("nope", tmp_path / "out")
    assert str(error.value).startswith(f"{ref}: no bundle named 'nope' in the store s3://{BUCKET}/{unique}")
    assert not (tmp_path / "out").exists()
    with pytest.raises(StoreError, match=f"^{ref}: no such object"):
        pull(ref, tmp_path / "out")
    with pytest.raises(StoreError, match=r"the bucket 'no-such-bucket' does not exist; create it \(aws s3 mb"):
        open_store("s3://no-such-bucket/x").bundle_bytes("y")
    assert open_store("s3://no-such-bucket/x").has_bundle("y") is False


def test_push_and_pull_a_key(bundle: Path, tmp_path: Path, s3_env: Server, unique: str) -> None:
    ref = push(bundle, f"s3://{BUCKET}/{unique}/exports/mlp.tar")
    assert ref == f"s3://{BUCKET}/{unique}/exports/mlp.tar"
    stored = raw_s3(s3_env).get_object(Bucket=BUCKET, Key=f"{unique}/exports/mlp.tar")
    assert stored["Body"].read() == pack(bundle)
    assert bundle_files(pull(ref, tmp_path / "out").path) == bundle_files(bundle)
    with pytest.raises(StoreError, match="name an object, not a folder"):
        push(bundle, f"s3://{BUCKET}/{unique}/exports/")


def test_a_damaged_object_is_refused(bundle: Path, tmp_path: Path, s3_env: Server, unique: str) -> None:
    s3 = open_store(f"s3://{BUCKET}/{unique}")
    s3.put_bundle(bundle, "mlp")
    key = f"{unique}/bundles/mlp.tar"
    data = bytearray(pack(bundle))
    data[600] ^= 0xFF
    raw_s3(s3_env).put_object(
        Bucket=BUCKET, Key=key, Body=bytes(data), Metadata={"sha256": hashlib.sha256(pack(bundle)).hexdigest()}
    )
    with pytest.raises(StoreError, match="the object is damaged"):
        s3.get_bundle("mlp", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_push_file_and_fetch(tmp_path: Path, s3_env: Server, unique: str) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07onnx-model-bytes" * 1000)
    ref = push_file(model, f"s3://{BUCKET}/{unique}/models/model.onnx")
    assert ref == f"s3://{BUCKET}/{unique}/models/model.onnx"
    head = raw_s3(s3_env).head_object(Bucket=BUCKET, Key=f"{unique}/models/model.onnx")
    assert head["ContentType"] == "application/vnd.onnx.model"
    dest = tmp_path / "fetched" / "model.onnx"
    assert fetch(ref, dest) == dest
    assert dest.read_bytes() == model.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.onnx"]
    with pytest.raises(StoreError, match="no such object"):
        fetch(f"s3://{BUCKET}/{unique}/missing.npy", tmp_path / "missing.npy")
    assert not (tmp_path / "missing.npy").exists()


def test_credentials_stay_out_of_uris_messages_and_logs(
    bundle: Path, tmp_path: Path, s3_env: Server, caplog: pytest.LogCaptureFixture, unique: str
) -> None:
    caplog.set_level(logging.DEBUG)
    s3 = open_store(f"s3://keyid:{S3_SECRET}@{BUCKET}/{unique}")
    assert s3.uri == f"s3://{BUCKET}/{unique}"
    assert s3.put_bundle(bundle, "mlp") == f"s3://{BUCKET}/{unique}/bundles/mlp.tar"
    messages = []
    for call in (
        lambda: s3.bundle_bytes("nope"),
        lambda: open_store("s3://no-such-bucket").bundle_bytes("x"),
        lambda: fetch(f"s3://{BUCKET}/{unique}/missing", tmp_path / "x"),
    ):
        with pytest.raises(StoreError) as error:
            call()
        messages.append(str(error.value))
    assert caplog.text  # botocore logged its requests at DEBUG...
    for text in [*messages, caplog.text]:
        assert S3_SECRET not in text  # ...and never the secret key


def test_wrong_endpoint_fails_clearly(tmp_path: Path, s3_env: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("GATEWRIGHT_S3_ENDPOINT", closed)
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"cannot reach S3 at {closed}; check GATEWRIGHT_S3_ENDPOINT"):
        fetch(f"s3://{BUCKET}/any", tmp_path / "x")
    assert time.monotonic() - started < 10


def test_no_credentials(tmp_path: Path, s3_env: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup on a test machine
    with pytest.raises(StoreError, match="no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        fetch(f"s3://{BUCKET}/any", tmp_path / "x")
