"""Artifact stores: where firmware bundles are kept for reuse, and where models are fetched from.

A store keeps bundles by name (``open_store``): a local directory, an S3 bucket, an OCI registry
repository. ``push`` / ``pull`` move one bundle to and from a full reference; ``fetch`` / ``push_file``
move one plain file (a model, calibration data). See docs/store.md.

The S3 and OCI backends (boto3, oras) are imported when first used, so ``gatewright`` starts fast.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewright.build.bundle import Bundle, pack, unpack
from gatewright.errors import StoreError
from gatewright.store.base import ArtifactStore, check_name, redact, scheme_of, write_atomic
from gatewright.store.local import LocalStore, file_path, read_file, write_file

if TYPE_CHECKING:
    from gatewright.store.oci import OciStore
    from gatewright.store.s3 import S3Store

__all__ = [
    "ArtifactStore",
    "LocalStore",
    "OciStore",
    "S3Store",
    "StoreError",
    "check_name",
    "fetch",
    "open_store",
    "pull",
    "push",
    "push_file",
    "redact",
]

STORES = "a directory (or file:///DIR), s3://BUCKET[/PREFIX] or oci://HOST[:PORT]/REPOSITORY"
REFERENCES = "oci://HOST[:PORT]/REPOSITORY:TAG, s3://BUCKET/KEY.tar or file:///PATH.tar"
FILES = "file:///PATH, s3://BUCKET/KEY, oci://HOST[:PORT]/REPOSITORY:TAG or http(s)://..."
MAX_FETCH_BYTES = 512 << 20


def __getattr__(name: str) -> Any:
    if name == "S3Store":
        from gatewright.store.s3 import S3Store

        return S3Store
    if name == "OciStore":
        from gatewright.store.oci import OciStore

        return OciStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(uri: str | Path) -> ArtifactStore:
    """The store at ``uri``: a path or ``file:///DIR``, ``s3://BUCKET[/PREFIX]``, ``oci://HOST[:PORT]/REPO``."""
    if isinstance(uri, Path) or scheme_of(uri) in ("", "file"):
        return LocalStore(uri)
    scheme = scheme_of(uri)
    if scheme == "s3":
        from gatewright.store.s3 import S3Store

        return S3Store(uri)
    if scheme == "oci":
        from gatewright.store.oci import OciStore

        return OciStore(uri)
    raise StoreError(f"{redact(uri)}: unknown store scheme '{scheme}://'; a store is {STORES}")


def push(bundle: Path, ref: str) -> str:
    """Store the bundle directory ``bundle`` at the reference ``ref``; the reference (without credentials)."""
    scheme = scheme_of(ref)
    if scheme not in ("", "file", "s3", "oci"):
        raise StoreError(f"{redact(ref)}: cannot push to '{scheme}://'; a bundle reference is {REFERENCES}")
    if scheme == "oci":
        from gatewright.store.oci import Location, OciStore

        location = Location.parse(ref)
        if location.digest:
            raise StoreError(f"{location}: push to a tag, not a digest: oci://HOST[:PORT]/REPOSITORY:TAG")
        repository = OciStore(dataclasses.replace(location, tag=None))
        return repository.put_bundle(bundle, location.reference)
    checked = Bundle(bundle)
    if scheme == "s3":
        from gatewright.store import s3

        return s3.put_object(*s3.parse(ref), pack(bundle), s3.TAR, s3.bundle_metadata(checked.manifest))
    return write_file(file_path(ref), pack(bundle))


def pull(ref: str, out: Path) -> Bundle:
    """Unpack the bundle at the reference ``ref`` (as ``push`` or ``put_bundle`` returned it) into ``out``."""
    scheme = scheme_of(ref)
    if scheme == "oci":
        from gatewright.store.oci import Location, OciStore

        location = Location.parse(ref)
        return unpack(OciStore(dataclasses.replace(location, tag=None, digest=None)).read(location), out)
    if scheme == "s3":
        from gatewright.store import s3

        return unpack(s3.get_object(*s3.parse(ref)), out)
    if scheme in ("", "file"):
        return unpack(read_file(file_path(ref), ref, "bundle archive"), out)
    if scheme in ("http", "https"):
        with tempfile.TemporaryDirectory(prefix="gatewright-pull-") as temp:
            return unpack(fetch(ref, Path(temp) / "bundle.tar").read_bytes(), out)
    raise StoreError(f"{redact(ref)}: cannot pull from '{scheme}://'; a bundle reference is {REFERENCES}")


def fetch(uri: str, dest: Path, allowed_roots: Sequence[Path] = (), *, max_bytes: int = MAX_FETCH_BYTES) -> Path:
    """Download the one file ``uri`` names into ``dest`` (atomically); ``dest``.

    A ``file://`` URI (or a plain path) must resolve, symlinks followed, inside one of
    ``allowed_roots`` when any are given. An ``oci://`` artifact gives its first layer.
    """
    dest = Path(dest)
    scheme = scheme_of(uri)
    if scheme in ("", "file"):
        return _copy_local(uri, dest, allowed_roots)
    if scheme == "s3":
        from gatewright.store import s3

        return s3.download(*s3.parse(uri), dest)
    if scheme == "oci":
        from gatewright.store import oci

        return oci.fetch(uri, dest)
    if scheme in ("http", "https"):
        from gatewright.store import http

        return http.fetch(uri, dest, max_bytes)
    raise StoreError(f"{redact(uri)}: cannot fetch from '{scheme}://'; a file is named by {FILES}")


def push_file(path: Path, ref: str) -> str:
    """Publish one file (a model) at ``ref`` (oci://, s3://, file://) for a deployment to fetch; the reference."""
    source = Path(path)
    if not source.is_file():
        raise StoreError(f"{source}: no such file; name the model file to publish")
    scheme = scheme_of(ref)
    if scheme == "oci":
        from gatewright.store import oci

        return oci.push_file(source, ref)
    if scheme == "s3":
        from gatewright.store import oci, s3

        media_type = oci.ONNX_LAYER if source.suffix.lower() == ".onnx" else oci.OCTET_LAYER
        return s3.put_object(*s3.parse(ref), read_file(source, str(source)), media_type)
    if scheme in ("", "file"):
        return write_file(file_path(ref), read_file(source, str(source)))
    raise StoreError(f"{redact(ref)}: cannot publish to '{scheme}://'; use oci://, s3:// or file://")


def _copy_local(uri: str, dest: Path, allowed_roots: Sequence[Path]) -> Path:
    path = file_path(uri)
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise StoreError(f"{uri}: no such file; check the path") from None
    if allowed_roots:
        roots = [Path(root).expanduser().resolve() for root in allowed_roots]
        if not any(resolved.is_relative_to(root) for root in roots):
            raise StoreError(
                f"{uri}: resolves to {resolved}, outside the allowed roots ({', '.join(map(str, roots))}); "
                f"move the file into one of them, or allow its folder (allow it with --allow-root {resolved.parent})"
            )
    if not resolved.is_file():
        raise StoreError(f"{uri}: not a regular file; name a model or data file")

    def chunks() -> Iterator[bytes]:
        try:  # the checked path itself: no symlink swapped in since the check is followed
            fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise StoreError(f"{uri}: cannot read it ({exc.strerror}); check its permissions") from None
        with os.fdopen(fd, "rb") as source:
            while chunk := source.read(1 << 20):
                yield chunk

    return write_atomic(dest, chunks())
