"""deploy/kserve/: the ServingRuntime and InferenceServices, checked against KServe's own CRD schemas.

The schemas in tests/deploy/crds/ are the openAPIV3Schema blocks of KServe's CRDs (source and commit
in their headers). Kubernetes CRD schemas are OpenAPI v3 structural schemas: the keywords used
(type, properties, items, required, additionalProperties, anyOf, pattern, enum) mean the same in
JSON Schema draft 7; jsonschema ignores the x-kubernetes-* extensions and the int32 / int64 formats.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kserve"
CRDS = Path(__file__).resolve().parent / "crds"
SCHEMAS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntimes.v1alpha1.schema.yaml",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservices.v1beta1.schema.yaml",
}
# what `gatewright serve` takes when KServe runs it (KServe's model-server flags, and gatewright's own)
SERVE_FLAGS = {"--model_name", "--model_dir", "--http_port", "--grpc_port", "--device", "--model-repository"}
FPGA = "gatewright.io/fpga-ecp5"

Doc = dict[str, Any]
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the 800 kB schema loads in 0.3 s with libyaml


def _load_all(path: Path) -> list[Doc]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_LOADER) if doc is not None]


def _manifests() -> list[Doc]:
    return [doc for path in sorted(MANIFESTS.glob("*.yaml")) for doc in _load_all(path)]


def _one(kind: str, name: str) -> Doc:
    (doc,) = [d for d in _manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _closed(schema: Any) -> Any:
    """The schema with unknown fields forbidden wherever the CRD lists an object's fields.

    That is what the API server does under strict field validation, kubectl's default: a misspelled
    field is an error, not silently dropped. Objects the CRD leaves open (metadata, status with
    x-kubernetes-preserve-unknown-fields, maps with additionalProperties) stay open.
    """
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if (
        "properties" in closed
        and "additionalProperties" not in closed
        and not closed.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


@functools.cache
def _validator(api_version: str, kind: str, strict: bool = True) -> jsonschema.Draft7Validator:
    path = CRDS / SCHEMAS[(api_version, kind)]
    schema = yaml.load(path.read_text(), Loader=_LOADER)
    if strict:
        schema = _closed(schema)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(doc: Doc, strict: bool = True) -> list[str]:
    """Every schema violation in doc, as 'path: message' (empty: valid)."""
    assert (doc.get("apiVersion"), doc.get("kind")) in SCHEMAS, f"no CRD schema for {doc.get('kind')}"
    validator = _validator(doc["apiVersion"], doc["kind"], strict)
    found = sorted(validator.iter_errors(doc), key=lambda error: list(map(str, error.absolute_path)))
    return [f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message[:200]}" for error in found]


def _serve_flags(args: list[str]) -> dict[str, str]:
    """Parse a container's args as `gatewright serve` flags, each written --flag=value."""
    flags: dict[str, str] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        assert arg.startswith("--") and sep and value, f"{arg!r}: write each argument as --flag=value"
        assert name in SERVE_FLAGS, f"{name}: not a flag of `gatewright serve` ({', '.join(sorted(SERVE_FLAGS))})"
        assert name not in flags, f"{name} given twice"
        flags[name] = value
    return flags


def _container(runtime: Doc) -> Doc:
    (container,) = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    return container


# --- the schemas themselves ---


@pytest.mark.parametrize("key", sorted(SCHEMAS))
def test_crd_schema_is_kserves_and_whole(key: tuple[str, str]) -> None:
    path = CRDS / SCHEMAS[key]
    header = path.read_text()[:1000]
    assert "https://github.com/kserve/kserve" in header
    assert re.search(r"commit: +[0-9a-f]{40}", header)
    schema = yaml.load(path.read_text(), Loader=_LOADER)
    spec = schema["properties"]["spec"]["properties"]
    if key[1] == "ServingRuntime":
        assert {"containers", "supportedModelFormats", "protocolVersions", "workerSpec"} <= spec.keys()
        assert spec["containers"]["items"]["required"] == ["name"]
    else:
        assert schema["properties"]["spec"]["required"] == ["predictor"]
        assert {"explainer", "predictor", "transformer"} == spec.keys()
        assert {"model", "onnx", "triton", "workerSpec", "containers"} <= spec["predictor"]["properties"].keys()
        assert "status" in schema["properties"]


# --- the manifests against them ---


@pytest.mark.parametrize("doc", _manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_matches_crd_schema(doc: Doc) -> None:
    assert _errors(doc) == []
    # names become DNS labels of Services and pods
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", doc["metadata"]["name"])


def test_every_manifest_is_one_of_the_expected_resources() -> None:
    found = sorted((d["kind"], d["metadata"]["name"]) for d in _manifests())
    assert found == [
        ("InferenceService", "digits-ecp5"),
        ("InferenceService", "digits-onnx"),
        ("ServingRuntime", "gatewright"),
    ]


# --- what the manifests say ---


def test_runtime_runs_gatewright_serve_as_a_kserve_model_server() -> None:
    runtime = _one("ServingRuntime", "gatewright")
    container = _container(runtime)
    assert container["image"] == "ghcr.io/gatewright/gatewright:0.1.0"
    assert container["command"] == ["gatewright", "serve"]
    flags = _serve_flags(container["args"])
    assert flags == {
        "--model_name": "{{.Name}}",  # KServe puts in the InferenceService's name
        "--model_dir": "/mnt/models",  # where KServe's storage initializer puts the model
        "--http_port": "8080",
        "--grpc_port": "8081",
    }
    assert {"v1", "v2", "grpc-v2"} <= set(runtime["spec"]["protocolVersions"])
    formats = {f["name"]: f for f in runtime["spec"]["supportedModelFormats"]}
    assert formats.keys() == {"gatewright-bundle", "onnx"}
    assert formats["gatewright-bundle"]["autoSelect"] is True
    assert formats["onnx"]["autoSelect"] is False  # KServe's own ONNX runtime stays the default


def test_runtime_ports_probes_and_metrics_follow_its_args() -> None:
    runtime = _one("ServingRuntime", "gatewright")
    container = _container(runtime)
    flags = _serve_flags(container["args"])
    http, grpc = int(flags["--http_port"]), int(flags["--grpc_port"])
    assert sorted(p["containerPort"] for p in container["ports"]) == [http, grpc]
    assert {p["name"] for p in container["ports"] if p["containerPort"] == grpc} == {"grpc"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": http}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": http}
    annotations = runtime["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == str(http)
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    assert container["resources"]["requests"] and container["resources"]["limits"]


@pytest.mark.parametrize("name", ["digits-ecp5", "digits-onnx"])
def test_inference_service_uses_the_runtime(name: str) -> None:
    runtime = _one("ServingRuntime", "gatewright")
    model = _one("InferenceService", name)["spec"]["predictor"]["model"]
    formats = {f["name"]: f for f in runtime["spec"]["supportedModelFormats"]}
    assert model["runtime"] == "gatewright"
    assert model["modelFormat"]["name"] in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["storageUri"].startswith("s3://models/")
    # KServe appends these to the runtime's args: together they must still be `gatewright serve` flags
    _serve_flags(_container(runtime)["args"] + model.get("args", []))


def test_fpga_service_asks_for_a_board_in_requests_and_limits() -> None:
    isvc = _one("InferenceService", "digits-ecp5")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] == "gatewright-bundle"
    assert model["storageUri"] == "s3://models/digits-ecp5/"
    # an extended resource is never overcommitted: Kubernetes rejects a request that differs from the limit
    assert model["resources"]["requests"][FPGA] == model["resources"]["limits"][FPGA] == "1"
    assert _serve_flags(model["args"])["--device"].startswith("board:")
    assert predictor["nodeSelector"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_onnx_service_runs_on_the_cpu_without_a_board() -> None:
    model = _one("InferenceService", "digits-onnx")["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "onnx"
    resources = model["resources"]
    assert FPGA not in resources.get("requests", {}) and FPGA not in resources.get("limits", {})


# --- the validation can fail ---


FieldPath = tuple[str | int, ...]


def _set(doc: Doc, path: FieldPath, value: Any) -> Doc:
    """A copy of doc with the field at path set to value (None: deleted)."""
    changed = copy.deepcopy(doc)
    *parents, last = path
    node: Any = changed
    for part in parents:
        node = node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return changed


def _where(path: FieldPath) -> str:
    return ".".join(map(str, path))


CONTAINER: FieldPath = ("spec", "containers", 0)
BROKEN_RUNTIMES: list[tuple[FieldPath, Any, FieldPath]] = [
    # (the field changed, its new value (None: removed), where the schema objects)
    (("spec", "containers"), {"kserve-container": {"image": "x"}}, ("spec", "containers")),  # a mapping
    ((*CONTAINER, "ports", 0, "containerPort"), "http", (*CONTAINER, "ports", 0, "containerPort")),
    ((*CONTAINER, "args"), "--model_dir=/mnt/models", (*CONTAINER, "args")),  # a string, not a list
    ((*CONTAINER, "name"), None, CONTAINER),  # a container needs a name
    ((*CONTAINER, "resources", "limits", "cpu"), "two", (*CONTAINER, "resources", "limits", "cpu")),  # no quantity
    ((*CONTAINER, "readinessProbe", "httpGet", "port"), None, (*CONTAINER, "readinessProbe", "httpGet")),
    (("spec", "supportedModelFormats", 0, "autoSelect"), "yes", ("spec", "supportedModelFormats", 0, "autoSelect")),
    (("spec", "protocolVersions"), "v2", ("spec", "protocolVersions")),
    (("spec", "protocolVersion"), ["v2"], ("spec",)),  # misspelled: an unknown field
]


@pytest.mark.parametrize(("path", "value", "where"), BROKEN_RUNTIMES, ids=[_where(b[0]) for b in BROKEN_RUNTIMES])
def test_broken_runtime_fails_validation(path: FieldPath, value: Any, where: FieldPath) -> None:
    errors = _errors(_set(_one("ServingRuntime", "gatewright"), path, value))
    assert any(error.startswith(f"{_where(where)}: ") for error in errors), errors


MODEL: FieldPath = ("spec", "predictor", "model")
BROKEN_SERVICES: list[tuple[FieldPath, Any, FieldPath]] = [
    (("spec", "predictor"), None, ("spec",)),  # the one component an InferenceService must have
    ((*MODEL, "resources", "requests", FPGA), "one", (*MODEL, "resources", "requests", FPGA)),  # no quantity
    ((*MODEL, "modelFormat", "name"), None, (*MODEL, "modelFormat")),
    ((*MODEL, "args"), {"--device": "board:ulx3s"}, (*MODEL, "args")),
    (("spec", "predictor", "minReplicas"), "1", ("spec", "predictor", "minReplicas")),
    (("spec", "predictor", "nodeSelector"), ["gatewright.io/board=ulx3s"], ("spec", "predictor", "nodeSelector")),
    ((*MODEL, "storageURI"), "s3://models/x/", MODEL),  # misspelled: an unknown field
]


@pytest.mark.parametrize(("path", "value", "where"), BROKEN_SERVICES, ids=[_where(b[0]) for b in BROKEN_SERVICES])
def test_broken_inference_service_fails_validation(path: FieldPath, value: Any, where: FieldPath) -> None:
    errors = _errors(_set(_one("InferenceService", "digits-ecp5"), path, value))
    assert any(error.startswith(f"{_where(where)}: ") for error in errors), errors


def test_unknown_fields_fail_only_under_strict_validation() -> None:
    typo = _set(_one("ServingRuntime", "gatewright"), ("spec", "protocolVersion"), ["v2"])
    assert _errors(typo, strict=False) == []  # the bare CRD schema lets it through (the API server would prune it)
    assert _errors(typo) == ["spec: Additional properties are not allowed ('protocolVersion' was unexpected)"]


def test_arguments_outside_gatewright_serve_are_caught() -> None:
    with pytest.raises(AssertionError, match="not a flag"):
        _serve_flags(["--model_name=x", "--port=8080"])
    with pytest.raises(AssertionError, match="given twice"):
        _serve_flags(["--device=emu", "--device=cpu"])
    with pytest.raises(AssertionError, match="--flag=value"):
        _serve_flags(["--model_dir", "/mnt/models"])
