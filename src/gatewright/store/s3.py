"""The S3 store: bundles as objects ``PREFIX/bundles/NAME.tar`` in a bucket (AWS S3, MinIO, Ceph, ...).

The endpoint comes from ``GATEWRIGHT_S3_ENDPOINT`` (or boto3's own ``AWS_ENDPOINT_URL``); credentials
and region from boto3's usual chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
``~/.aws``, an instance role). A PUT of one object is atomic: a reader sees the old object or the new one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3  # type: ignore[import-untyped]
import botocore.config  # type: ignore[import-untyped]
import botocore.exceptions  # type: ignore[import-untyped]

from gatewright.build.bundle import Bundle
from gatewright.errors import StoreError
from gatewright.store.base import ArtifactStore, check_name, redact, write_atomic
from gatewright.store.local import BUNDLES

TAR = "application/x-tar"
CHUNK = 1 << 20


class ObjectMissing(StoreError):
    """No object under the key (the bucket exists)."""


def parse(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key); the key may be empty."""
    parts = urlsplit(uri)
    bucket = parts.netloc.rpartition("@")[2]
    if parts.scheme.lower() != "s3" or not bucket:
        raise StoreError(f"{redact(uri)}: not an S3 URI; write s3://BUCKET/KEY")
    if parts.query or parts.fragment:
        raise StoreError(f"s3://{bucket}{parts.path}: an S3 URI takes no '?' or '#' part; write s3://BUCKET/KEY")
    return bucket, unquote(parts.path).lstrip("/")


def endpoint() -> str | None:
    return os.environ.get("GATEWRIGHT_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None


def client() -> Any:
    """A boto3 S3 client: path-style addressing on a custom endpoint (MinIO, Ceph and moto need it)."""
    url = endpoint()
    config = botocore.config.Config(
        connect_timeout=10,
        read_timeout=120,
        retries={"mode": "standard", "max_attempts": 3},
        s3={"addressing_style": "path" if url else "auto"},
    )
    try:
        # boto3 reads AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_S3) itself when no endpoint is given
        return boto3.session.Session().client(
            "s3", endpoint_url=os.environ.get("GATEWRIGHT_S3_ENDPOINT") or None, config=config
        )
    except (botocore.exceptions.BotoCoreError, ValueError) as exc:
        raise StoreError(
            f"S3: cannot set up a client ({exc}); check GATEWRIGHT_S3_ENDPOINT and the AWS_* settings"
        ) from None


def error(exc: Exception, ref: str, action: str) -> StoreError:
    """A botocore failure as a StoreError that says what and how to fix (no credential in it)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectMissing(f"{ref}: no such object; check the key, or push it first")
        if code == "NoSuchBucket":
            bucket = parse(ref)[0]
            return StoreError(
                f"{ref}: the bucket '{bucket}' does not exist; create it (aws s3 mb s3://{bucket}) or fix the name"
            )
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            return StoreError(
                f"{ref}: S3 refused to {action} it ({code}); check the credentials (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and the bucket's policy"
            )
        return StoreError(f"{ref}: S3 could not {action} it ({code or status}); check the bucket and the endpoint")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StoreError(
            f"{ref}: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        )
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        where = endpoint() or "the AWS endpoint"
        return StoreError(f"{ref}: cannot reach S3 at {where}; check GATEWRIGHT_S3_ENDPOINT and the network")
    return StoreError(f"{ref}: S3 could not {action} it ({type(exc).__name__}); check the endpoint and the settings")


def put_object(
    bucket: str, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None, api: Any = None
) -> str:
    """Upload ``data`` as ``s3://bucket/key`` (with its sha256 in the object's metadata); its reference."""
    ref = f"s3://{bucket}/{key}"
    if not key or key.endswith("/"):
        raise StoreError(f"{ref}: name an object, not a folder: s3://BUCKET/KEY")
    meta = {"sha256": hashlib.sha256(data).hexdigest(), **(metadata or {})}
    meta = {k: v for k, v in meta.items() if k.isascii() and v.isascii()}  # S3 metadata travels in headers
    try:
        (api or client()).put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, Metadata=meta)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise error(exc, ref, "write") from None
    return ref


def _chunks(bucket: str, key: str, api: Any = None) -> Iterator[bytes]:
    """The object's bytes in chunks, checked against the sha256 stored with it."""
    ref = f"s3://{bucket}/{key}"
    try:
        answer = (api or client()).get_object(Bucket=bucket, Key=key)
        expected = answer.get("Metadata", {}).get("sha256")
        digest = hashlib.sha256()
        for chunk in answer["Body"].iter_chunks(CHUNK):
            digest.update(chunk)
            yield chunk
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise error(exc, ref, "read") from None
    if expected and digest.hexdigest() != expected:
        raise StoreError(
            f"{ref}: the object is damaged (its sha256 differs from the one stored with it); push it again"
        )


def get_object(bucket: str, key: str, api: Any = None) -> bytes:
    return b"".join(_chunks(bucket, key, api))


def download(bucket: str, key: str, dest: Path) -> Path:
    """Stream ``s3://bucket/key`` into ``dest`` atomically."""
    return write_atomic(dest, _chunks(bucket, key))


def exists(bucket: str, key: str, api: Any = None) -> bool:
    try:
        (api or client()).head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise error(exc, f"s3://{bucket}/{key}", "look up") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise error(exc, f"s3://{bucket}/{key}", "look up") from None
    return True


class S3Store(ArtifactStore):
    """Bundles as ``s3://BUCKET/PREFIX/bundles/NAME.tar``, with the model and target in the object's metadata."""

    def __init__(self, uri: str) -> None:
        self.bucket, prefix = parse(uri)
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self._api: Any = None

    @property
    def api(self) -> Any:
        """The store's boto3 client, made on first use."""
        if self._api is None:
            self._api = client()
        return self._api

    def key(self, name: str) -> str:
        return "/".join(part for part in (self.prefix, BUNDLES, f"{check_name(name)}.tar") if part)

    def reference(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def has_bundle(self, name: str) -> bool:
        return exists(self.bucket, self.key(name), self.api)

    def bundle_bytes(self, name: str) -> bytes:
        try:
            return get_object(self.bucket, self.key(name), self.api)
        except ObjectMissing:
            raise self.missing(name) from None

    def _put(self, name: str, data: bytes, bundle: Bundle) -> str:
        return put_object(self.bucket, self.key(name), data, TAR, bundle_metadata(bundle.manifest), self.api)


def bundle_metadata(manifest: dict[str, Any]) -> dict[str, str]:
    """What an S3 listing shows of a bundle: its model and target."""
    return {"model": str(manifest["model"].get("name", "")), "target": str(manifest.get("target", ""))}
