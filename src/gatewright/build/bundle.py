"""The firmware bundle: a directory with ``manifest.json`` and the files it names.

Layout (schema 1; later build steps add ``rtl/``, ``reports/`` and the bitstream)::

    manifest.json          what was built, from what, how, with which results
    model.onnx             the source model, byte for byte
    host.onnx              the host part (absent when the hardware part produces every output)
    quantized.json         the quantized IR: formats and integer weights
    quantization.json      the quantization report
    golden.npz             golden vectors: inputs, expected outputs, and the hardware part's raw integers
    build.log              timestamped step log

A bundle is written into a temporary sibling directory and renamed into place when complete, so a
reader never sees half a bundle.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from gatewright.errors import BundleError
from gatewright.model.ir import TensorSpec
from gatewright.quant.qir import QuantizedModel

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SOURCE_MODEL = "model.onnx"
HOST_MODEL = "host.onnx"
QUANTIZED = "quantized.json"
REPORT = "quantization.json"
GOLDEN = "golden.npz"
LOG = "build.log"
REQUIRED_KEYS = ("model", "target", "inputs", "outputs", "split", "quantization", "golden", "steps")


class Bundle:
    """A bundle on disk, read lazily."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(
                f"{self.path}: not a firmware bundle (no {MANIFEST}); build one with "
                "`gatewright build MODEL.onnx --out DIR`"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{manifest_path}: unreadable manifest ({exc}); rebuild the bundle") from None
        version = self.manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"{manifest_path}: schema version {version!r}, this gatewright reads {SCHEMA_VERSION}; "
                "rebuild the bundle"
            )
        missing = [key for key in REQUIRED_KEYS if key not in self.manifest]
        if missing:
            raise BundleError(f"{manifest_path}: the manifest lacks {', '.join(missing)}; rebuild the bundle")

    @staticmethod
    def is_bundle(path: str | Path) -> bool:
        return (Path(path) / MANIFEST).is_file()

    @property
    def name(self) -> str:
        return str(self.manifest["model"]["name"])

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec.from_json(item) for item in self.manifest["inputs"])

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec.from_json(item) for item in self.manifest["outputs"])

    @property
    def split(self) -> dict[str, Any]:
        return dict(self.manifest["split"])

    @property
    def fixed_batch(self) -> int | None:
        value = self.manifest["model"].get("fixed_batch")
        return None if value is None else int(value)

    def file(self, name: str) -> Path:
        path = self.path / name
        if not path.is_file():
            raise BundleError(f"{self.path}: the bundle lacks {name}; rebuild it")
        return path

    def source_model(self) -> bytes:
        return self.file(SOURCE_MODEL).read_bytes()

    def host_model(self) -> bytes | None:
        host = self.split["host"]
        return self.file(host["file"]).read_bytes() if host.get("file") else None

    @cached_property
    def quantized(self) -> QuantizedModel:
        return QuantizedModel.load(self.file(QUANTIZED))

    def golden(self) -> dict[str, np.ndarray]:
        with np.load(self.file(GOLDEN), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}


@contextmanager
def writing(out: str | Path) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it replaces ``out`` in one rename.

    An existing bundle at ``out`` is replaced; any other non-empty directory is left alone.
    """
    target = Path(out)
    if target.exists() and not (target.is_dir() and (Bundle.is_bundle(target) or not any(target.iterdir()))):
        raise BundleError(f"{target}: exists and is not a firmware bundle; choose another --out or remove it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise BundleError(f"{target}: cannot create the bundle there ({exc.strerror}); choose another --out") from None
    try:
        yield staging
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "bundle")
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def pack(path: str | Path) -> bytes:
    """The bundle as an uncompressed tar, byte for byte the same for the same files (sorted names,
    no times, owners or modes beyond the executable bit): its sha256 identifies the content."""
    root = Path(path)
    if not Bundle.is_bundle(root):
        raise BundleError(f"{root}: not a firmware bundle (no {MANIFEST}); build one with `gatewright build`")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for file in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            info = tarfile.TarInfo(file.relative_to(root).as_posix())
            info.size = file.stat().st_size
            info.mode = 0o755 if os.access(file, os.X_OK) else 0o644
            with file.open("rb") as data:
                tar.addfile(info, data)
    return buffer.getvalue()


def unpack(data: bytes, out: str | Path) -> Bundle:
    """Unpack a tar made by ``pack`` into ``out`` (atomically). Members that are not plain files inside
    the bundle (absolute paths, ``..``, links, devices) are refused: the archive may come from anyone."""
    with writing(out) as staging:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                tar.extractall(staging, filter=_plain_files_only)
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{out}: the bundle archive is damaged or unsafe ({exc})") from None
        if not (staging / MANIFEST).is_file():
            raise BundleError(f"{out}: the archive holds no {MANIFEST}; it is not a firmware bundle")
        Bundle(staging)  # a manifest of an unknown schema fails here, before anything lands at ``out``
    return Bundle(out)


def _plain_files_only(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    if not (member.isfile() or member.isdir()):
        raise tarfile.FilterError(f"{member.name}: not a plain file")
    return tarfile.data_filter(member, dest)  # no absolute paths, no escape from dest, sane modes
