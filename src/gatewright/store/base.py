"""What every artifact store shares: the interface, bundle names, atomic files, printable URIs."""

from __future__ import annotations

import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gatewright.build.bundle import Bundle, pack, unpack
from gatewright.errors import StoreError

# a bundle name is an OCI tag: a cache key (64 hex digits) or a label such as ``digits-v1``
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# query parameters whose values are secrets (pre-signed URLs, tokens) and never printed
SECRET_PARAMS = ("password", "passwd", "secret", "token", "signature", "credential", "key", "sig", "auth")
REDACTED = "REDACTED"


def check_name(name: str) -> str:
    """``name`` if it is a valid bundle name (and OCI tag), else a StoreError saying what is allowed."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise StoreError(
            f"bundle name {name!r} is not valid: use 1 to 128 letters, digits, '_', '.' or '-', not starting "
            "with '.' or '-' (the rule for OCI tags), for example a cache key or 'digits-v1'"
        )
    return name


def scheme_of(uri: str) -> str:
    """The URI's scheme in lower case, or "" for a plain path."""
    match = SCHEME.match(uri)
    if match:
        return match.group(1).lower()
    return "file" if uri[:5].lower() == "file:" else ""  # file:/path is a file URI too (RFC 8089)


def redact(uri: str) -> str:
    """``uri`` fit to print or log: without ``user:password@`` and with secret query values replaced."""
    if not scheme_of(uri):
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(key, REDACTED if any(word in key.lower() for word in SECRET_PARAMS) else value) for key, value in pairs],
            safe="/:",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def write_atomic(path: Path, data: bytes | Iterable[bytes]) -> Path:
    """Write ``data`` (bytes, or chunks) to ``path`` through a temporary sibling renamed into place: a
    reader sees the old file or the whole new one, and a failure leaves nothing behind."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise StoreError(
            f"{path}: cannot write there ({exc.strerror}); choose another path or fix its permissions"
        ) from None
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in [data] if isinstance(data, bytes) else data:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(f"{path}: cannot write there ({exc.strerror}); check the space and permissions") from None
        raise
    return path


class ArtifactStore(ABC):
    """A place that keeps firmware bundles by name, each as the tar ``pack`` makes, byte for byte."""

    uri: str  # where the store is, printable: never holds credentials

    def put_bundle(self, bundle: Path, name: str) -> str:
        """Store the bundle directory ``bundle`` as ``name`` (replacing an earlier one); its reference."""
        check_name(name)
        checked = Bundle(bundle)  # refuse anything that is not a readable bundle
        return self._put(name, pack(bundle), checked)

    def get_bundle(self, name: str, out: Path) -> Bundle:
        """Unpack the bundle stored as ``name`` into ``out`` (atomically: all of it or nothing)."""
        return unpack(self.bundle_bytes(name), out)

    @abstractmethod
    def reference(self, name: str) -> str:
        """The reference URI of the bundle stored (or to be stored) as ``name``."""

    @abstractmethod
    def has_bundle(self, name: str) -> bool:
        """Whether a bundle is stored as ``name``."""

    @abstractmethod
    def bundle_bytes(self, name: str) -> bytes:
        """The stored tar, exactly as ``pack`` made it; a StoreError naming the reference if absent."""

    @abstractmethod
    def _put(self, name: str, data: bytes, bundle: Bundle) -> str:
        """Store ``data`` (``bundle`` packed) as ``name``; its reference."""

    def missing(self, name: str) -> StoreError:
        ref = self.reference(name)
        return StoreError(
            f"{ref}: no bundle named '{name}' in the store {self.uri}; check the name, or store it first "
            f"with `gatewright push BUNDLE {ref}`"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"
