"""What precision the user asked for: model-wide defaults and per-layer overrides.

A request for one quantity is a ``PrecisionSpec``: a width, and optionally the integer bits. When
the integer bits are left open, the quantizer picks them from the values (weights, biases) or from
the calibration data (input, activations). Sources, later ones winning: the defaults below, a
precision file (YAML or JSON), then ``--bits`` flags.

Precision file::

    defaults:            # whole model
      weight: 8          # width only: integer bits chosen from the values
      activation: fixed<16,6>
    layers:
      fc1:               # a layer name from `gatewright inspect`
        weight: 6
        accumulator: 24

``--bits`` flags: ``8`` (weights), ``weight=6``, ``activation=fixed<12,4>``, ``fc1.weight=6``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gatewright.errors import PrecisionError
from gatewright.quant.fixed import FixedFormat

#: quantities with a format: the hardware input, and per Dense layer its weight, bias, accumulator
#: and output ("activation": the value after the layer, kept by the activations that follow it).
KINDS = ("input", "weight", "bias", "accumulator", "activation")
LAYER_KINDS = ("weight", "bias", "accumulator", "activation")

#: widest format for values converted from real numbers (float64 holds 53 significant bits)
MAX_VALUE_BITS = 52

#: integer bits for the input and activations when no calibration data is given (hls4ml's ap_fixed<16,6>)
UNCALIBRATED_INT_BITS = 6


@dataclass(frozen=True)
class PrecisionSpec:
    """A requested width, with integer bits fixed or (None) left to calibration."""

    bits: int | None = None
    int_bits: int | None = None

    def __str__(self) -> str:
        if self.bits is None:
            return "auto"
        return str(FixedFormat(self.bits, self.int_bits)) if self.int_bits is not None else f"{self.bits} bits"

    @classmethod
    def parse(cls, value: Any, where: str) -> PrecisionSpec:
        """``8``, ``"fixed<8,3>"``, ``"8,3"``, ``{"bits": 8, "int_bits": 3}``, or ``"auto"``."""
        if isinstance(value, PrecisionSpec):
            return value
        try:
            if isinstance(value, bool):
                raise PrecisionError("a boolean is not a width")
            if isinstance(value, int):
                spec = cls(value)
            elif isinstance(value, str) and value.strip().isdigit():
                spec = cls(int(value))
            elif isinstance(value, str) and value.strip() == "auto":
                return cls()
            elif isinstance(value, str):
                fmt = FixedFormat.parse(value)
                spec = cls(fmt.bits, fmt.int_bits)
            elif isinstance(value, dict) and set(value) <= {"bits", "int_bits"} and "bits" in value:
                spec = cls(int(value["bits"]), None if value.get("int_bits") is None else int(value["int_bits"]))
            else:
                raise PrecisionError(f"cannot read {value!r}")
            FixedFormat(spec.bits or 2, 0)  # validates the width
        except (PrecisionError, ValueError, TypeError) as exc:
            raise PrecisionError(
                f"{where}: {exc}. Write a width (8), a format (fixed<16,6>), or {{bits: 8, int_bits: 3}}"
            ) from None
        return spec


DEFAULTS: dict[str, PrecisionSpec] = {
    "input": PrecisionSpec(16),
    "weight": PrecisionSpec(8),
    "bias": PrecisionSpec(16),
    "accumulator": PrecisionSpec(),  # wide enough that the sum never overflows
    "activation": PrecisionSpec(16),
}


@dataclass
class PrecisionConfig:
    """Defaults for the whole model, and overrides per layer name."""

    defaults: dict[str, PrecisionSpec] = field(default_factory=lambda: dict(DEFAULTS))
    layers: dict[str, dict[str, PrecisionSpec]] = field(default_factory=dict)

    def spec(self, kind: str, layer: str | None = None) -> PrecisionSpec:
        override = self.layers.get(layer, {}).get(kind) if layer else None
        return override or self.defaults[kind]

    def set(self, key: str, value: Any, where: str) -> None:
        """Apply ``KIND`` or ``LAYER.KIND`` = value."""
        layer, _, kind = key.rpartition(".")
        allowed = LAYER_KINDS if layer else KINDS
        if kind not in allowed:
            raise PrecisionError(
                f"{where}: unknown quantity '{kind}'; use one of {', '.join(allowed)}"
                + (" (per layer)" if layer else "")
            )
        spec = PrecisionSpec.parse(value, f"{where}: {key}")
        if kind != "accumulator" and spec.bits is not None and spec.bits > MAX_VALUE_BITS:
            raise PrecisionError(
                f"{where}: {key} of {spec.bits} bits is too wide: real values convert exactly into at most "
                f"{MAX_VALUE_BITS} bits (accumulators may use up to 64)"
            )
        if layer:
            self.layers.setdefault(layer, {})[kind] = spec
        else:
            self.defaults[kind] = spec

    def check_layers(self, names: list[str]) -> None:
        unknown = sorted(set(self.layers) - set(names))
        if unknown:
            raise PrecisionError(
                f"precision given for unknown layer(s) {', '.join(unknown)}; the model's linear layers are: "
                + ", ".join(names)
                + " (see `gatewright inspect`)"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "defaults": {k: str(v) for k, v in self.defaults.items()},
            "layers": {name: {k: str(v) for k, v in kinds.items()} for name, kinds in sorted(self.layers.items())},
        }

    @classmethod
    def build(cls, precision_file: str | Path | None = None, bits: list[str] | None = None) -> PrecisionConfig:
        """Defaults, then the precision file, then each ``--bits`` flag."""
        config = cls()
        if precision_file is not None:
            config.apply_file(Path(precision_file))
        for flag in bits or []:
            key, sep, value = flag.partition("=")
            if not sep:
                key, value = "weight", flag
            config.set(key.strip(), value.strip(), f"--bits {flag}")
        return config

    def apply_file(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PrecisionError(f"{path}: cannot read the precision file ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise PrecisionError(f"{path}: not a text file; write the precision file as UTF-8 YAML or JSON") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise PrecisionError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
        self.apply_mapping(data, str(path))

    def apply_mapping(self, data: Any, path: str) -> None:
        """Apply a precision file's content (``defaults`` and ``layers``); ``path`` says where it came from."""
        if data is None:
            return
        if not isinstance(data, dict) or set(data) - {"defaults", "layers"}:
            raise PrecisionError(f"{path}: the top level must be a mapping with 'defaults' and/or 'layers'")
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise PrecisionError(f"{path}: 'defaults' must map quantities (weight, activation, ...) to precisions")
        for key, value in defaults.items():
            self.set(str(key), value, f"{path}: defaults")
        layers = data.get("layers") or {}
        if not isinstance(layers, dict):
            raise PrecisionError(f"{path}: 'layers' must map layer names to their precisions")
        for layer, kinds in layers.items():
            if not isinstance(kinds, dict):
                raise PrecisionError(f"{path}: layers.{layer} must map quantities (weight, ...) to precisions")
            for kind, value in kinds.items():
                self.set(f"{layer}.{kind}", value, f"{path}: layers")
