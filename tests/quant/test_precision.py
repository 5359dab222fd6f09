"""Precision requests: defaults, precision files, --bits flags, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewright.errors import PrecisionError
from gatewright.quant import DEFAULTS, PrecisionConfig, PrecisionSpec


def test_defaults_are_documented_values() -> None:
    config = PrecisionConfig()
    assert config.spec("weight") == PrecisionSpec(8)
    assert config.spec("activation") == PrecisionSpec(16)
    assert config.spec("input") == PrecisionSpec(16)
    assert config.spec("accumulator") == PrecisionSpec()
    assert DEFAULTS["bias"] == PrecisionSpec(16)


def test_bits_flags_model_wide_and_per_layer() -> None:
    config = PrecisionConfig.build(bits=["6", "activation=fixed<12,4>", "fc1.weight=4", "fc1.accumulator=20"])
    assert config.spec("weight") == PrecisionSpec(6)
    assert config.spec("weight", "fc2") == PrecisionSpec(6)
    assert config.spec("weight", "fc1") == PrecisionSpec(4)
    assert config.spec("activation", "fc1") == PrecisionSpec(12, 4)
    assert config.spec("accumulator", "fc1") == PrecisionSpec(20)


def test_precision_file_yaml_then_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "precision.yaml"
    path.write_text("defaults:\n  weight: 10\n  input: {bits: 12, int_bits: 3}\nlayers:\n  fc2:\n    weight: 5\n")
    config = PrecisionConfig.build(path, ["fc2.weight=7"])
    assert config.spec("weight") == PrecisionSpec(10)
    assert config.spec("input") == PrecisionSpec(12, 3)
    assert config.spec("weight", "fc2") == PrecisionSpec(7)


def test_precision_file_json(tmp_path: Path) -> None:
    path = tmp_path / "precision.json"
    path.write_text('{"layers": {"dense_0": {"activation": "fixed<10,5>"}}}')
    assert PrecisionConfig.build(path).spec("activation", "dense_0") == PrecisionSpec(10, 5)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["weights=8"], "unknown quantity 'weights'; use one of input, weight, bias, accumulator, activation"),
        (["fc1.input=8"], "unknown quantity 'input'; use one of weight, bias, accumulator, activation"),
        (["weight=eight"], "--bits weight=eight: weight: 'eight' is not a fixed-point format"),
        (["weight=1"], "width 1 is out of range"),
        (["activation=fixed<99,3>"], "width 99 is out of range"),
    ],
)
def test_bad_flags(flags: list[str], message: str) -> None:
    with pytest.raises(PrecisionError) as info:
        PrecisionConfig.build(bits=flags)
    assert message in str(info.value)


def test_bad_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("defaults: [weight: 8\n")
    with pytest.raises(PrecisionError, match=r"broken\.yaml: not valid YAML"):
        PrecisionConfig.build(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("weight: 8\n")
    with pytest.raises(PrecisionError, match=r"wrong\.yaml: the top level must be a mapping with 'defaults'"):
        PrecisionConfig.build(wrong)
    with pytest.raises(PrecisionError, match=r"missing\.yaml: cannot read the precision file"):
        PrecisionConfig.build(tmp_path / "missing.yaml")


def test_unknown_layer_names_are_listed() -> None:
    config = PrecisionConfig.build(bits=["fc9.weight=4"])
    with pytest.raises(PrecisionError, match=r"unknown layer\(s\) fc9; the model's linear layers are: fc1, fc2"):
        config.check_layers(["fc1", "fc2"])


def test_value_formats_wider_than_float64_can_hold_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PrecisionError, match="bias of 64 bits is too wide"):
        PrecisionConfig.build(bits=["bias=64"])
    with pytest.raises(PrecisionError, match="activation of 64 bits is too wide"):
        PrecisionConfig.build(bits=["activation=fixed<64,20>"])
    assert PrecisionConfig.build(bits=["accumulator=64"]).spec("accumulator") == PrecisionSpec(64)


def test_precision_files_of_the_wrong_shape_or_encoding(tmp_path: Path) -> None:
    listed = tmp_path / "listed.yaml"
    listed.write_text("defaults: [1, 2]\n")
    with pytest.raises(PrecisionError, match="'defaults' must map quantities"):
        PrecisionConfig.build(listed)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(PrecisionError, match="not a text file"):
        PrecisionConfig.build(binary)
