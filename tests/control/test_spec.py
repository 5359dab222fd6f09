"""The deployment spec: what it accepts, how it normalizes, and what each mistake says."""

from __future__ import annotations

import pytest

from gatewright.control.spec import SpecError, parse, parse_text

GOOD = """
apiVersion: gatewright/v1
kind: Deployment
metadata: {name: digits-1}
spec:
  model: {uri: "s3://models/digits.onnx", calibration: "https://example.org/calib.npy"}
  engine: fpga
  target: ecp5-25k
  device: {kind: board}
  quantization: {bits: [8, "activation=fixed<12,4>"], precision: {layers: {fc1: {weight: 6}}}}
  architecture: {arch: folded, reuse: 4, clockMHz: 50}
"""


def test_a_full_spec_normalizes_with_every_field() -> None:
    deployment = parse_text(GOOD)
    assert deployment.name == "digits-1"
    data = deployment.to_json()
    assert data["spec"]["architecture"] == {"arch": "folded", "reuse": 4, "clockMHz": 50.0}
    assert data["spec"]["device"] == {"kind": "board", "uri": None}
    assert deployment.spec.quantization.bits_flags() == ["8", "activation=fixed<12,4>"]
    config = deployment.spec.quantization.config()
    assert config.spec("weight").bits == 8
    assert config.spec("weight", "fc1").bits == 6
    assert config.spec("activation").bits == 12
    assert parse(data).to_json() == data  # normalized is a fixed point


def test_defaults_fill_in() -> None:
    data = parse(
        {
            "apiVersion": "gatewright/v1",
            "kind": "Deployment",
            "metadata": {"name": "m"},
            "spec": {"model": {"uri": "file:///m.onnx"}},
        }
    ).to_json()["spec"]
    assert data["engine"] == "fpga" and data["target"] == "generic"
    assert data["architecture"] == {"arch": "auto", "reuse": None, "clockMHz": None}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("apiVersion: gatewright/v2", 'apiVersion: must be gatewright/v1, got "gatewright/v2"'),
        ("kind: Service", "kind: Input should be 'Deployment'"),
        ("metadata: {name: Digits_1}", "metadata.name: 'Digits_1' is not a valid name"),
        ("metadata: {name: digits, labels: {a: b}}", "metadata.labels: unknown field"),
        ("spec: {model: {uri: /abs/m.onnx}}", "spec.model.uri: '/abs/m.onnx' is not a model URI"),
        ("spec: {model: {uri: 'https://u:p@host/m.onnx'}}", "spec.model.uri: the URI holds credentials"),
        ("spec: {engine: fpga}", "spec.model: required field missing"),
        ("spec: {model: {uri: file:///m}, target: ecp5-12k}", "spec.target: unknown target 'ecp5-12k'"),
        ("spec: {model: {uri: file:///m}, engine: gpu}", "spec.engine: Input should be 'fpga' or 'onnx'"),
        ("spec: {model: {uri: file:///m}, device: {kind: tpu}}", "spec.device.kind: Input should be"),
        ("spec: {model: {uri: file:///m}, architecture: {reuse: 2}}", "reuse sets how folded layers share"),
        (
            "spec: {model: {uri: file:///m}, architecture: {clockMHz: 0}}",
            "spec.architecture.clockMHz: Input should be greater than 0",
        ),
        ("spec: {model: {uri: file:///m}, architecture: {arch: wide}}", "unknown architecture 'wide'"),
        ("spec: {model: {uri: file:///m}, quantization: {bits: 99}}", "fixed-point width 99 is out of range"),
        ("spec: {model: {uri: file:///m}, quantization: {precision: {layers: 3}}}", "'layers' must map layer names"),
        ("spec: {model: {uri: file:///m}, engine: onnx, device: {kind: sim}}", "engine onnx runs the model on a CPU"),
        ("spec: {model: {uri: file:///m, calibration: file:///c.npy}, engine: onnx}", "calibration is for engine fpga"),
    ],
)
def test_each_mistake_names_its_field_and_the_fix(edit: str, expected: str) -> None:
    base = {
        "apiVersion": "apiVersion: gatewright/v1",
        "kind": "kind: Deployment",
        "metadata": "metadata: {name: digits}",
        "spec": "spec: {model: {uri: file:///m.onnx}}",
    }
    base[edit.split(":", 1)[0]] = edit
    with pytest.raises(SpecError) as error:
        parse_text("\n".join(base.values()))
    assert expected in str(error.value)


@pytest.mark.parametrize("text", ["[1, 2]", "just text", "a: [", ""])
def test_a_body_that_is_no_mapping_is_refused(text: str) -> None:
    with pytest.raises(SpecError, match="spec: "):
        parse_text(text)
