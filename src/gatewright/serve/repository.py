"""The model repository, laid out as Triton's.

``DIR/<model>/`` holds a firmware bundle (``manifest.json``) or a ``model.onnx``, or numbered version
folders ``DIR/<model>/<version>/`` that each hold one; an optional ``DIR/<model>/config.pbtxt`` (Triton's
model configuration in protobuf text format) sets the version policy, the maximum batch size, the
dynamic batcher and, as the parameter ``device``, where the model runs. The folder's name is the
model's name. A KServe container instead mounts one model at ``--model_dir``: that folder itself
is then the model (``single``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError

from gatewright.serve import inference_pb2 as pb
from gatewright.serve.errors import NotFoundError, RequestError

log = logging.getLogger("gatewright.serve")

MODEL_FILE = "model.onnx"
MANIFEST = "manifest.json"
CONFIG_FILE = "config.pbtxt"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass
class ModelSource:
    """One model of the repository: its versions (number → folder) and its configuration."""

    name: str
    versions: dict[int, Path]
    config: pb.ModelConfig = field(default_factory=pb.ModelConfig)

    def selected_versions(self) -> list[int]:
        """The versions the version policy serves (Triton's default: the latest one)."""
        policy = self.config.version_policy
        available = sorted(self.versions)
        choice = policy.WhichOneof("policy_choice")
        if choice == "all":
            return available
        if choice == "specific":
            return [v for v in available if v in set(policy.specific.versions)]
        latest = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions else 1
        return available[-latest:]


def holds_model(path: Path) -> bool:
    return (path / MANIFEST).is_file() or (path / MODEL_FILE).is_file()


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or len(name) > 200:
        raise RequestError(f"model name {name[:200]!r}: use letters, digits, '_', '-' and '.' (at most 200)")


def read_source(name: str, root: Path, config_override: str | None = None) -> ModelSource:
    """The versions and configuration of the model in folder ``root``."""
    check_name(name)
    if not root.is_dir():
        raise NotFoundError(f"model '{name}': no folder {root}")
    versions: dict[int, Path] = {}
    if holds_model(root):
        versions[1] = root
    for child in root.iterdir():
        if child.is_dir() and child.name.isascii() and child.name.isdigit() and holds_model(child):
            versions[int(child.name)] = child
    source = ModelSource(name, versions, _read_config(name, root, config_override))
    if not versions:
        raise NotFoundError(
            f"model '{name}': {root} holds no model; put a firmware bundle (manifest.json) or a {MODEL_FILE} "
            f"in it or in numbered version folders ({root}/1/{MODEL_FILE})"
        )
    return source


def _read_config(name: str, root: Path, override: str | None) -> pb.ModelConfig:
    config = pb.ModelConfig()
    if override is not None:  # the repository API's "config" parameter: the configuration as JSON
        try:
            parsed = json.loads(override)
            if not isinstance(parsed, dict):
                raise ValueError(f"a JSON object is needed, not {type(parsed).__name__}")
            ParseDict(parsed, config, ignore_unknown_fields=True)
        except (ValueError, TypeError, ParseError) as exc:
            raise RequestError(
                f"model '{name}': the 'config' parameter is not a valid model configuration: {exc}"
            ) from None
        return config
    path = root / CONFIG_FILE
    if path.is_file():
        try:
            text_format.Parse(path.read_text(), config, allow_unknown_field=True)
        except text_format.ParseError as exc:
            raise RequestError(f"{path}: not a valid model configuration: {exc}") from None
    return config


def scan(directory: Path) -> dict[str, Path]:
    """Model folders of a repository, by name."""
    if not directory.is_dir():
        raise NotFoundError(f"model repository {directory}: no such folder")
    found: dict[str, Path] = {}
    for child in sorted(directory.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and _NAME.match(child.name):
            found[child.name] = child
    return found


def config_json(config: pb.ModelConfig) -> dict[str, object]:
    """A configuration as Triton writes it in JSON: field names as in the .proto, numbers as numbers."""
    data = MessageToDict(config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return _numbers(data)  # type: ignore[return-value]


_INT64_FIELDS = {"dims", "max_queue_delay_microseconds", "versions"}


def _numbers(value: object, key: str = "") -> object:
    """protobuf's JSON writes 64-bit integers as strings; Triton's configuration has them as numbers."""
    if isinstance(value, dict):
        return {k: _numbers(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v, key) for v in value]
    if key in _INT64_FIELDS and isinstance(value, str):
        return int(value)
    return value
