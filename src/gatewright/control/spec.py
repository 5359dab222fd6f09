"""The deployment spec (``apiVersion: gatewright/v1``, ``kind: Deployment``): parsed, checked, normalized.

A spec says what should run where; the reconcile loop (``control.reconcile``) makes it so. Parsing
checks everything that can be checked without fetching the model, so a typo fails at ``apply`` with
the field's path, not minutes later in a build.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gatewright.build.hardware import HardwareOptions, unknown_arch
from gatewright.errors import GatewrightError
from gatewright.quant import PrecisionConfig
from gatewright.targets import TARGETS

API_VERSION = "gatewright/v1"
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MODEL_SCHEMES = ("file://", "s3://", "oci://", "http://", "https://")
DEVICE_KINDS = ("emu", "sim", "cpu", "board", "remote", "noop")


class SpecError(GatewrightError):
    """A deployment spec that cannot be applied as written."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ModelSource(_Strict):
    uri: str
    calibration: str | None = None

    @field_validator("uri", "calibration")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(MODEL_SCHEMES):
            raise ValueError(f"'{value}' is not a model URI; use one of {', '.join(s + '...' for s in MODEL_SCHEMES)}")
        if "@" in urlsplit(value).netloc:
            # the spec is stored and shown in status and logs: a credential in it would leak
            raise ValueError(
                "the URI holds credentials (user@ or user:password@); give them to the control plane "
                "instead (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for s3://, GATEWRIGHT_OCI_USERNAME/"
                "GATEWRIGHT_OCI_PASSWORD for oci://)"
            )
        return value


class DeviceSelector(_Strict):
    kind: Literal["emu", "sim", "cpu", "board", "remote", "noop"] | None = None
    uri: str | None = None


class Quantization(_Strict):
    bits: int | str | list[int | str] | None = None  # as `build --bits`: 8, "weight=6", ["activation=fixed<12,4>"]
    precision: dict[str, Any] | None = None  # as a precision file: {"defaults": {...}, "layers": {...}}

    def bits_flags(self) -> list[str]:
        if self.bits is None:
            return []
        return [str(b) for b in self.bits] if isinstance(self.bits, list) else [str(self.bits)]

    def config(self) -> PrecisionConfig:
        """The precision this asks for (raises PrecisionError on a bad value)."""
        config = PrecisionConfig()
        config.apply_mapping(self.precision, "spec.quantization.precision")
        for flag in self.bits_flags():
            key, sep, value = flag.partition("=")
            config.set(key.strip() if sep else "weight", (value if sep else flag).strip(), "spec.quantization.bits")
        return config


class Architecture(_Strict):
    arch: str = "auto"
    reuse: int | None = Field(default=None, ge=1)
    clock_mhz: float | None = Field(default=None, alias="clockMHz", gt=0, le=1000)

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str) -> str:
        if problem := unknown_arch(value):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _reuse_needs_folded(self) -> Architecture:
        if self.reuse is not None and self.arch != "folded":
            raise ValueError("reuse sets how folded layers share their multipliers: set arch: folded with it")
        return self

    def options(self) -> HardwareOptions:
        return HardwareOptions(self.arch, self.clock_mhz, self.reuse)


class DeploymentSpec(_Strict):
    model: ModelSource
    engine: Literal["fpga", "onnx"] = "fpga"
    target: str = "generic"
    device: DeviceSelector = DeviceSelector()
    quantization: Quantization = Quantization()
    architecture: Architecture = Architecture()

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if value not in TARGETS:
            raise ValueError(f"unknown target '{value}'; choose one of {', '.join(TARGETS)}")
        return value

    @model_validator(mode="after")
    def _engine_fits(self) -> DeploymentSpec:
        if self.engine == "onnx":
            if self.device.kind not in (None, "cpu", "remote"):
                raise ValueError(f"engine onnx runs the model on a CPU; device kind {self.device.kind} runs firmware")
            if self.model.calibration is not None:
                raise ValueError("calibration is for engine fpga (quantization); engine onnx runs the float model")
        elif self.device.kind == "cpu":
            pass  # a bundle runs on cpu too: its float reference, a useful comparison
        return self


class Metadata(_Strict):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(
                f"'{value}' is not a valid name: use lower-case letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters"
            )
        return value


class Deployment(_Strict):
    api_version: Literal["gatewright/v1"] = Field(alias="apiVersion")
    kind: Literal["Deployment"]
    metadata: Metadata
    spec: DeploymentSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    def to_json(self) -> dict[str, Any]:
        """The normalized spec: every field, defaults filled in, the spelling users write."""
        return self.model_dump(mode="json", by_alias=True)


def parse(data: Any, where: str = "spec") -> Deployment:
    """A deployment from its decoded YAML / JSON; SpecError names every bad field and how to fix it."""
    if not isinstance(data, dict):
        raise SpecError(
            f"{where}: a deployment spec is a mapping with apiVersion: {API_VERSION}, kind: Deployment, "
            "metadata and spec"
        )
    try:
        deployment = Deployment.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise SpecError(f"{where}: {problems}") from None
    try:
        deployment.spec.quantization.config()
    except GatewrightError as exc:
        raise SpecError(f"{where}: {exc}") from None
    return deployment


def parse_text(text: str | bytes, where: str = "spec") -> Deployment:
    """A deployment from YAML or JSON text (JSON is YAML)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{where}: not valid YAML or JSON: {exc}") from None
    return parse(data, where)


def _problem(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field (check its spelling; see docs/control.md for the fields)"
    elif error["type"] == "missing":
        message = "required field missing"
    elif error["type"] == "literal_error" and location == "apiVersion":
        message = f"must be {API_VERSION}, got {json.dumps(error.get('input'))}"
    return f"{location}: {message}"
