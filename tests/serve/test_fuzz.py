"""Property-based fuzzing of the REST API with schemathesis, against a live ``gatewright serve``.

The schema is the server's own (GET /openapi.json): schemathesis runs its examples, coverage and
fuzzing phases on every operation, with valid and invalid data, and checks each answer against the
description (status codes, content types, response schemas, headers), that invalid data is refused
with a 4xx, that undocumented methods get a 405 with an Allow header, and that nothing answers a 5xx
but a documented 503 for a model that is not ready.

The fuzzer loads, unloads and re-configures models, registers shared memory, and changes the trace
and log settings, so it runs against a server of its own on a copy of the repository, started in a
temporary folder: the trace and log files it names land there (see ``_contain_paths``).
Afterwards the server must still be live, and ready and right once the repository's models are
loaded again (the fuzz may have unloaded them or loaded them with another configuration).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import strategies as st

from tests.serve.conftest import Repo, Server, call, start_server, stop_server

schemathesis = pytest.importorskip("schemathesis")

MODELS = ("digits", "typed", "echo", "mlp_bundle", "zipmap")
# cases per operation in the fuzzing phase (the examples and coverage phases add their own); a deeper run:
# GATEWRIGHT_FUZZ_EXAMPLES=500 pytest tests/serve/test_fuzz.py
MAX_EXAMPLES = int(os.environ.get("GATEWRIGHT_FUZZ_EXAMPLES", "30"))
HEADER_LENGTH = "Inference-Header-Content-Length"
FUZZED: list[str] = []  # the operations the fuzz test ran, for the health test after it


def test_the_description_is_valid_openapi_and_served(server: Server) -> None:
    """The file is a valid OpenAPI document (schemathesis checks it against the OpenAPI schema), served as is."""
    document = json.loads(resources.files("gatewright.serve").joinpath("openapi.json").read_bytes())
    schemathesis.openapi.from_dict(document).validate()
    for path in ("/openapi.json", "/v2/openapi.json"):
        assert call(server, path) == (200, document)


@pytest.fixture(scope="module")
def fuzz_server(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of the fuzzer's own, on a copy of the repository, working in a temporary folder."""
    work = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(repo.path, work / "repository")
    (work / "tmp").mkdir()
    cwd = os.getcwd()
    os.chdir(work)  # the server's working folder: relative trace and log files land here
    try:
        server = start_server(
            ["--model-repository", str(work / "repository")],
            work / "serve.log",
            env={"TMPDIR": str(work / "tmp")},  # the load API's uploaded files, too
        )
    finally:
        os.chdir(cwd)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_server: Server) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "seed": 20260504,
            "suppress-health-check": ["too_slow", "filter_too_much"],  # each case is an HTTP call, on a busy CI
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            # inference takes the richest bodies: three times the cases
            "operations": [
                {"include-path-regex": "(/infer|:predict)$", "generation": {"max-examples": 3 * MAX_EXAMPLES}}
            ],
            "checks": {
                # a 503 is the documented answer for a model that is not ready (the fuzzer unloads models and
                # loads them with configurations of its own); `no_server_fault` below still fails any other 5xx
                "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
                # whether a request is right depends on the model (its inputs' names, shapes and datatypes)
                # and on the server's state (loaded models, registered regions, existing shared-memory
                # objects), which no JSON schema can say: a schema-valid request for the wrong model gets
                # the documented 400, so "valid data is accepted" does not hold for this API
                "positive_data_acceptance": {"enabled": False},
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base}/openapi.json", config=config, timeout=10)

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
        """Send most generated cases that name a model to a model that exists, so that the fuzz reaches
        past the 404 into the model's checks; a name the description refuses (a negative case) stays."""
        name = (path_parameters or {}).get("name")
        if not isinstance(name, str) or not name or "/" in name or ":" in name or name == "stats":
            return st.just(path_parameters)
        return st.sampled_from([*({**path_parameters, "name": model} for model in MODELS), path_parameters])

    @schema.hook
    def flatmap_headers(context: Any, headers: dict[str, Any] | None) -> Any:
        """Keep a generated Inference-Header-Content-Length in a third of the cases (see `_header_length`)."""
        if not headers or HEADER_LENGTH not in headers:
            return st.just(headers)
        rest = {k: v for k, v in headers.items() if k != HEADER_LENGTH}
        return st.sampled_from([rest, rest, headers])

    return schema


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy pytest integration reads and writes ``Node._nodeid`` (to name each
    operation's subtest); pytest 9.2 keeps the id elsewhere (``Node._id``). The attribute it expects
    is harmless where it already exists."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def no_server_fault(ctx: Any, response: Any, case: Any) -> None:
    """No 5xx but the documented 503 of a model that is not ready (which the fuzz itself causes)."""
    if response.status_code < 500:
        return
    message = ""
    with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not an object
        message = response.json().get("error", "")
    if response.status_code == 503 and ("not ready" in message or "failed to load" in message):
        return
    raise AssertionError(f"{case.method} {case.formatted_path} answered {response.status_code}: {message}")


def _header_length(case: Any) -> None:
    """Inference-Header-Content-Length must be the length of the body's JSON header, which a generated
    value hardly ever is (the coverage phase sends 0 with every body it varies): a case keeps it only
    where the case is about that header, so that the others reach past the JSON header."""
    if HEADER_LENGTH not in (case.headers or {}) or case.meta is None or case.meta.phase.name.value != "coverage":
        return
    if getattr(case.meta.phase.data, "parameter", None) != HEADER_LENGTH:
        del case.headers[HEADER_LENGTH]


def _contain_paths(case: Any) -> None:
    """Keep the trace and log files the fuzzer names inside the server's temporary working folder.

    An absolute or nested path becomes a file name in that folder ('/' → '_'); names such as '.',
    '..' or '' stay as they are, so the server's handling of a path it cannot open is still fuzzed.
    """
    if not case.path.endswith(("/trace/setting", "/logging")) or not isinstance(case.body, dict):
        return
    for key in ("trace_file", "log_file"):
        value = case.body.get(key)
        if isinstance(value, str):
            case.body[key] = value.replace("/", "_")
        elif isinstance(value, list):
            case.body[key] = [v.replace("/", "_") if isinstance(v, str) else v for v in value]


@schema.parametrize()
@pytest.mark.slow
def test_fuzz_the_rest_api(case: Any) -> None:
    _header_length(case)
    _contain_paths(case)
    FUZZED.append(case.operation.label)
    case.call_and_validate(additional_checks=[no_server_fault], timeout=30)


# -- after the fuzz -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_server_survives_the_fuzz(fuzz_server: Server, repo: Repo) -> None:
    if not FUZZED:
        pytest.skip("runs after test_fuzz_the_rest_api, in the same session")
    assert fuzz_server.process.poll() is None, Path(fuzz_server.log).read_text()[-4000:]
    assert call(fuzz_server, "/v2/health/live") == (200, {"live": True})
    # put back what the fuzz may legitimately have changed: settings, regions, and every model
    reset = dict.fromkeys(("trace_file", "trace_level", "trace_rate", "trace_count", "log_frequency", "trace_mode"))
    assert call(fuzz_server, "/v2/trace/setting", reset)[0] == 200
    for name in MODELS:
        assert call(fuzz_server, f"/v2/repository/models/{name}/load", {}) == (200, {}), name
        assert call(fuzz_server, f"/v2/models/{name}/trace/setting", reset)[0] == 200, name
    assert call(fuzz_server, "/v2/systemsharedmemory/unregister", {}) == (200, {})
    assert call(fuzz_server, "/v2/health/ready") == (200, {"ready": True})
    x = repo.x[:8]
    status, answer = call(
        fuzz_server,
        "/v2/models/digits/infer",
        {"inputs": [{"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]},
    )
    assert status == 200, answer
    session = ort.InferenceSession(repo.digits_v2, providers=["CPUExecutionProvider"])
    want = session.run(["label"], {"X": x})[0]
    got = {o["name"]: o for o in answer["outputs"]}["label"]["data"]
    np.testing.assert_array_equal(np.array(got, dtype=np.int64), want)
