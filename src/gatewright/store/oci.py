"""The OCI store: bundles as OCI artifacts ``HOST[:PORT]/REPOSITORY:NAME`` in any OCI Distribution
registry (Distribution, Harbor, Zot, GHCR, ECR, ...), through the ``oras`` SDK.

A bundle is one manifest whose ``artifactType`` is ``application/vnd.gatewright.bundle.v1``, its config
the bundle's ``manifest.json`` (so a registry's UI shows the model and target) and its one layer the
``pack`` tar. A registry shows a tag only once its manifest is complete, so a reader never sees half a
push. Plain HTTP is used for localhost and where ``GATEWRIGHT_OCI_INSECURE=1``; credentials come from
the URI's ``user:password@``, else ``GATEWRIGHT_OCI_USERNAME`` / ``GATEWRIGHT_OCI_PASSWORD``, else the
Docker config (``~/.docker/config.json``). No credential is ever printed or logged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import oras.auth  # type: ignore[import-untyped]
import oras.auth.utils  # type: ignore[import-untyped]
import oras.container  # type: ignore[import-untyped]
import oras.provider  # type: ignore[import-untyped]
import requests

from gatewright.build.bundle import MANIFEST, Bundle
from gatewright.errors import StoreError
from gatewright.store.base import ArtifactStore, check_name, write_atomic

BUNDLE_ARTIFACT = "application/vnd.gatewright.bundle.v1"
BUNDLE_LAYER = "application/vnd.gatewright.bundle.layer.v1.tar"
BUNDLE_CONFIG = "application/vnd.gatewright.bundle.config.v1+json"
MODEL_ARTIFACT = "application/vnd.gatewright.model.v1"
ONNX_LAYER = "application/vnd.onnx.model"
OCTET_LAYER = "application/octet-stream"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"  # the OCI 1.1 empty descriptor: the two bytes "{}"
IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPTED_MANIFESTS = (IMAGE_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json")
TITLE = "org.opencontainers.image.title"
DEFAULT_TAG = "latest"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
CHUNK = 1 << 20
# the OCI distribution spec's rule for repository names
REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


@dataclass(frozen=True)
class Location:
    """``oci://[user:password@]HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]`` taken apart; ``str`` and ``uri``
    leave the credentials out."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, uri: str) -> Location:
        parts = urlsplit(uri)
        userinfo, _, host = parts.netloc.rpartition("@")
        printable = f"oci://{host}{parts.path}"
        if parts.scheme.lower() != "oci" or not host or not parts.path.strip("/"):
            raise StoreError(f"{printable}: not an OCI reference; write oci://HOST[:PORT]/REPOSITORY[:TAG]")
        if parts.query or parts.fragment:
            raise StoreError(f"{printable}: an OCI reference takes no '?' or '#' part")
        path, _, digest = parts.path.strip("/").partition("@")
        repository, tag = path, None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            repository, _, tag = path.rpartition(":")
            check_name(tag)
        if not REPOSITORY.fullmatch(repository):
            raise StoreError(
                f"{printable}: '{repository}' is not a valid repository name; use lower-case letters, digits "
                "and '.', '_', '-' between them, in parts separated by '/'"
            )
        if digest and not DIGEST.fullmatch(digest):
            raise StoreError(f"{printable}: '{digest}' is not a digest; write @sha256:<64 hex digits>")
        username, _, password = userinfo.partition(":")
        return cls(host, repository, tag, digest or None, unquote(username) or None, unquote(password) or None)

    @property
    def uri(self) -> str:
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}" if self.tag else ""
        return f"oci://{self.host}/{self.repository}{suffix}"

    @property
    def reference(self) -> str:
        """What the registry's API takes after ``manifests/``: the digest, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def at(self, tag: str) -> Location:
        return Location(self.host, self.repository, check_name(tag), None, self.username, self.password)

    def __str__(self) -> str:
        return self.uri


class _Auth(oras.auth.TokenAuth):
    """oras-py's token flow (Docker Hub, GHCR, Harbor) plus a plain Basic challenge (a registry behind
    htpasswd), which the token flow would mistake for a token realm. Explicit credentials win over the
    Docker config."""

    def __init__(self, username: str | None, password: str | None) -> None:
        super().__init__()
        self.unanswered = False
        self.explicit = bool(username and password)
        if username and password:
            self._basic_auth = oras.auth.utils.get_basic_auth(username, password)

    def load_configs(self, container: Any, configs: list[str] | None = None) -> None:
        if not self.explicit:
            super().load_configs(container, configs)

    def authenticate_request(
        self, original: requests.Response, headers: dict[str, str], refresh: bool = False
    ) -> tuple[dict[str, str], bool]:
        challenge = original.headers.get("Www-Authenticate", "")
        result: tuple[dict[str, str], bool]
        if challenge.lower().startswith("basic"):
            basic = getattr(self, "_basic_auth", None)
            result = ({**(headers or {}), "Authorization": f"Basic {basic}"}, True) if basic else (headers, False)
        else:  # a 401 despite a token means it lacks the scope now asked (push after pull): get a new one
            result = super().authenticate_request(original, headers, refresh=True)
        self.unanswered = not result[1]  # oras-py then raises a bare ValueError
        return result


class _Registry(oras.provider.Registry):
    """oras-py's registry client without its retry loop, which sleeps for minutes on a refused connection."""

    do_request = oras.provider.Registry.do_request.__wrapped__


class Client:
    """One repository of one registry: push and read artifacts, with errors a user can act on."""

    def __init__(self, location: Location) -> None:
        self.location = location
        username = location.username or os.environ.get("GATEWRIGHT_OCI_USERNAME") or None
        password = location.password or os.environ.get("GATEWRIGHT_OCI_PASSWORD") or None
        if bool(username) != bool(password):
            raise StoreError(
                f"{location}: give both a user name and a password (GATEWRIGHT_OCI_USERNAME and "
                "GATEWRIGHT_OCI_PASSWORD), or neither"
            )
        hostname = location.host.rsplit(":", 1)[0] if not location.host.endswith("]") else location.host
        insecure = hostname in LOCAL_HOSTS or os.environ.get("GATEWRIGHT_OCI_INSECURE") == "1"
        self.registry = _Registry(hostname=location.host, insecure=insecure)
        # set the parts rather than have oras parse them: it would read a first part such as 'team.a' as a host
        namespace, _, name = location.repository.rpartition("/")
        self.container = oras.container.Container(name, registry=location.host)
        self.container.registry = location.host
        self.container.namespace = namespace or None
        self.container.repository = name
        self.container.tag, self.container.digest = location.reference, None
        auth = _Auth(username, password)
        auth.session, auth.prefix, auth._tls_verify = self.registry.session, self.registry.prefix, True
        self.registry.auth = auth
        auth.load_configs(self.container)  # ~/.docker/config.json, unless credentials were given
        self.base = f"{self.registry.prefix}://{location.host}"

    def request(self, method: str, url: str, where: Location, **kwargs: Any) -> requests.Response:
        try:
            response: requests.Response = self.registry.do_request(url, method, **kwargs)
        except requests.exceptions.SSLError:
            raise StoreError(
                f"{where}: TLS with {self.base} failed; if the registry speaks plain HTTP set "
                "GATEWRIGHT_OCI_INSECURE=1, else check its certificate (REQUESTS_CA_BUNDLE)"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise StoreError(
                f"{where}: cannot reach the registry at {self.base} ({_reason(exc)}); check the host and port"
            ) from None
        except ValueError:  # oras-py: a 401 it cannot answer (no credentials)
            raise self.refused(where) from None
        if response.status_code in (401, 403):
            raise self.refused(where)
        return response

    def refused(self, where: Location) -> StoreError:
        return StoreError(
            f"{where}: the registry at {self.base} refused access; set GATEWRIGHT_OCI_USERNAME and "
            "GATEWRIGHT_OCI_PASSWORD (or `docker login`) to credentials allowed to use this repository"
        )

    def upload(self, path: Path, media_type: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """Upload the file at ``path`` as a blob (skipped when the registry has it); its descriptor."""
        digest = hashlib.sha256()
        with path.open("rb") as data:
            while chunk := data.read(CHUNK):
                digest.update(chunk)
        descriptor: dict[str, Any] = {
            "mediaType": media_type,
            "digest": f"sha256:{digest.hexdigest()}",
            "size": path.stat().st_size,
        }
        try:
            response = self.registry.upload_blob(str(path), self.container, descriptor)
        except requests.exceptions.RequestException as exc:
            raise StoreError(f"{self.location}: cannot reach the registry at {self.base} ({_reason(exc)})") from None
        except ValueError:  # oras-py: a 401 it could not answer, or no upload session
            if self.registry.auth.unanswered:
                raise self.refused(self.location) from None
            raise StoreError(
                f"{self.location}: the registry at {self.base} did not accept the upload; check that the "
                "repository may be created there and that the credentials (GATEWRIGHT_OCI_USERNAME / "
                "GATEWRIGHT_OCI_PASSWORD) may push to it"
            ) from None
        self.check(response, self.location, "upload a blob")
        return {**descriptor, "annotations": annotations} if annotations else descriptor

    def push(
        self,
        tag: str,
        artifact_type: str,
        layer: Path,
        layer_type: str,
        config: Path | None,
        config_type: str,
        annotations: dict[str, str],
    ) -> str:
        """Push an artifact of one layer (the file ``layer``, titled with its name) as ``tag``; its reference."""
        where = self.location.at(tag)
        layer_descriptor = self.upload(layer, layer_type, {TITLE: layer.name})
        with tempfile.TemporaryDirectory(prefix="gatewright-oci-") as temp:
            if config is None:
                config = Path(temp) / "config.json"
                config.write_bytes(b"{}")
            config_descriptor = self.upload(config, config_type)
        manifest = {
            "schemaVersion": 2,
            "mediaType": IMAGE_MANIFEST,
            "artifactType": artifact_type,
            "config": config_descriptor,
            "layers": [layer_descriptor],
            "annotations": annotations,
        }
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        url = f"{self.base}/v2/{where.repository}/manifests/{tag}"
        response = self.request("PUT", url, where, data=body, headers={"Content-Type": IMAGE_MANIFEST})
        self.check(response, where, "store the manifest")
        return where.uri

    def manifest(self, where: Location) -> dict[str, Any]:
        url = f"{self.base}/v2/{where.repository}/manifests/{where.reference}"
        response = self.request("GET", url, where, headers={"Accept": ", ".join(ACCEPTED_MANIFESTS)})
        if response.status_code == 404:
            raise Missing(f"{where}: no such artifact in the registry; check the repository and tag, or push it first")
        self.check(response, where, "read the manifest")
        try:
            manifest: dict[str, Any] = response.json()
        except ValueError:
            raise StoreError(f"{where}: the registry answered a manifest that is not JSON") from None
        if not manifest.get("layers"):
            raise StoreError(
                f"{where}: the artifact has no layer (media type {manifest.get('mediaType')}); it holds no file"
            )
        return manifest

    def exists(self, where: Location) -> bool:
        url = f"{self.base}/v2/{where.repository}/manifests/{where.reference}"
        response = self.request("HEAD", url, where, headers={"Accept": ", ".join(ACCEPTED_MANIFESTS)})
        if response.status_code == 404:
            return False
        self.check(response, where, "look up the manifest")
        return True

    def blob(self, where: Location, descriptor: dict[str, Any]) -> Iterator[bytes]:
        """The blob's bytes in chunks, checked against its digest and size."""
        digest = str(descriptor.get("digest", ""))
        if not DIGEST.fullmatch(digest):
            raise StoreError(
                f"{where}: the layer's digest {digest!r} is not a sha256 digest; gatewright reads sha256 only"
            )
        url = f"{self.base}/v2/{where.repository}/blobs/{digest}"
        response = self.request("GET", url, where, stream=True)
        with response:
            self.check(response, where, "read a blob")
            hasher, size = hashlib.sha256(), 0
            try:
                for chunk in response.iter_content(CHUNK):
                    hasher.update(chunk)
                    size += len(chunk)
                    yield chunk
            except requests.exceptions.RequestException as exc:
                raise StoreError(f"{where}: the download broke off ({_reason(exc)}); try again") from None
        if f"sha256:{hasher.hexdigest()}" != digest or size != descriptor.get("size", size):
            raise StoreError(f"{where}: the blob {digest} arrived damaged (digest or size differ); try again")

    def check(self, response: requests.Response, where: Location, action: str) -> None:
        if response.status_code in (200, 201, 202):
            return
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
        except (ValueError, AttributeError):
            detail = ""
        raise StoreError(
            f"{where}: the registry at {self.base} could not {action} (HTTP {response.status_code}"
            f"{': ' + detail if detail else ''}); check the reference and the registry"
        )


class Missing(StoreError):
    """No manifest under the tag or digest."""


def _reason(exc: Exception) -> str:
    text = str(exc)
    for phrase in ("Connection refused", "Name or service not known", "timed out", "Connection reset"):
        if phrase.lower() in text.lower():
            return phrase.lower()
    return type(exc).__name__


def push_file(path: Path, ref: str) -> str:
    """Push one file (a model) as an artifact of type ``application/vnd.gatewright.model.v1``."""
    location = Location.parse(ref)
    if location.digest:
        raise StoreError(f"{location}: push to a tag, not a digest: oci://HOST/REPOSITORY:TAG")
    layer_type = ONNX_LAYER if path.suffix.lower() == ".onnx" else OCTET_LAYER
    return Client(location).push(location.reference, MODEL_ARTIFACT, path, layer_type, None, EMPTY_CONFIG, {})


def fetch(ref: str, dest: Path) -> Path:
    """Download the first layer of the artifact ``ref`` into ``dest`` atomically."""
    location = Location.parse(ref)
    client = Client(location)
    layer = client.manifest(location)["layers"][0]
    return write_atomic(dest, client.blob(location, layer))


class OciStore(ArtifactStore):
    """Bundles as tags of one repository: ``oci://HOST[:PORT]/REPOSITORY:NAME``."""

    def __init__(self, uri: str | Location) -> None:
        self.location = uri if isinstance(uri, Location) else Location.parse(uri)
        if self.location.tag or self.location.digest:
            raise StoreError(f"{self.location}: an OCI store is a repository; drop the ':tag' or '@digest'")
        self.uri = self.location.uri
        self.client = Client(self.location)

    def reference(self, name: str) -> str:
        return self.location.at(name).uri

    def has_bundle(self, name: str) -> bool:
        return self.client.exists(self.location.at(name))

    def bundle_bytes(self, name: str) -> bytes:
        try:
            return self.read(self.location.at(name))
        except Missing:
            raise self.missing(name) from None

    def read(self, where: Location) -> bytes:
        """The bundle tar of the artifact at ``where`` (a tag or a digest of this repository)."""
        manifest = self.client.manifest(where)
        layer = manifest["layers"][0]
        if layer.get("mediaType") != BUNDLE_LAYER:
            raise StoreError(
                f"{where}: not a gatewright bundle (artifact type {manifest.get('artifactType')}, layer "
                f"{layer.get('mediaType')}); push bundles with `gatewright push BUNDLE {where}`"
            )
        return b"".join(self.client.blob(where, layer))

    def _put(self, name: str, data: bytes, bundle: Bundle) -> str:
        annotations = {
            "io.gatewright.model": str(bundle.manifest["model"].get("name", "")),
            "io.gatewright.target": str(bundle.manifest.get("target", "")),
        }
        with tempfile.TemporaryDirectory(prefix="gatewright-oci-") as temp:
            layer = Path(temp) / f"{name}.tar"
            layer.write_bytes(data)
            return self.client.push(
                name, BUNDLE_ARTIFACT, layer, BUNDLE_LAYER, bundle.file(MANIFEST), BUNDLE_CONFIG, annotations
            )
