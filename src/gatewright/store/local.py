"""The local store: a directory (or shared file system) holding ``bundles/NAME.tar``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from gatewright.build.bundle import Bundle
from gatewright.errors import StoreError
from gatewright.store.base import ArtifactStore, check_name, redact, scheme_of, write_atomic

BUNDLES = "bundles"


def file_path(uri: str | Path) -> Path:
    """The absolute path a ``file:///...`` URI (or a plain path) names."""
    if isinstance(uri, Path) or not scheme_of(uri):
        return Path(uri).expanduser().absolute()
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file":
        raise StoreError(f"{redact(uri)}: not a file:// URI")
    if parts.netloc not in ("", "localhost"):
        raise StoreError(
            f"{redact(uri)}: a file URI names a local path, not host '{parts.hostname}'; write file:///ABSOLUTE/PATH "
            "(three slashes)"
        )
    if parts.query or parts.fragment:
        raise StoreError(f"{uri}: a file URI takes no '?' or '#' part; write file:///ABSOLUTE/PATH")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise StoreError(f"{uri}: a file URI needs an absolute path; write file:///ABSOLUTE/PATH")
    return path


def read_file(path: Path, ref: str, what: str = "file") -> bytes:
    """The bytes of the file at ``path`` (named ``ref`` in messages)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{ref}: no such {what}; check the path") from None
    except IsADirectoryError:
        raise StoreError(f"{ref}: is a directory, not a {what}; name the file") from None
    except OSError as exc:
        raise StoreError(f"{ref}: cannot read it ({exc.strerror}); check its permissions") from None


def write_file(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; its file:// reference."""
    if path.is_dir():
        raise StoreError(f"{path}: is a directory; name a file such as {path / 'NAME.tar'}")
    write_atomic(path, data)
    return path.as_uri()


class LocalStore(ArtifactStore):
    """Bundles as ``ROOT/bundles/NAME.tar``; each written to a temporary file and renamed into place."""

    def __init__(self, root: str | Path) -> None:
        self.root = file_path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root}: exists and is not a directory; a local store is a directory")
        self.uri = self.root.as_uri()

    def path(self, name: str) -> Path:
        return self.root / BUNDLES / f"{check_name(name)}.tar"

    def reference(self, name: str) -> str:
        return self.path(name).as_uri()

    def has_bundle(self, name: str) -> bool:
        return self.path(name).is_file()

    def bundle_bytes(self, name: str) -> bytes:
        path = self.path(name)
        if not path.is_file():
            raise self.missing(name)
        return read_file(path, self.reference(name), "bundle")

    def _put(self, name: str, data: bytes, bundle: Bundle) -> str:
        return write_file(self.path(name), data)
