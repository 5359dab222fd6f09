"""deploy/grafana/gatewright-bench.json: a Grafana dashboard over the metrics the bench runner exports.

Checked: the dashboard's structure (unique panel ids, grid positions that fit and do not overlap, every
query on the ``datasource`` variable), that its queries use exactly the exported metrics with their own
labels and the ``experiment`` filter, and that every query is at least balanced; where ``promtool`` can
parse a bare expression (``promtool --experimental promql format``, Prometheus 2.40 on), it parses each.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "gatewright-bench.json"
RUN = {"experiment", "run", "target", "optimization"}
METRICS = {  # what the bench runner exports: name and labels
    "gatewright_bench_runs": {"experiment", "state"},
    "gatewright_bench_run_latency_us": RUN | {"quantile"},
    "gatewright_bench_run_throughput": RUN,
    "gatewright_bench_run_accuracy": RUN,
    "gatewright_bench_run_luts": RUN,
    "gatewright_bench_run_fmax_mhz": RUN,
    "gatewright_bench_queries_total": {"experiment", "run"},
    "gatewright_bench_build_seconds": {"experiment", "run"},
}
PANEL_TYPES = {"timeseries", "stat", "table"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels) >= 5
    assert {panel["type"] for panel in panels} == PANEL_TYPES
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["title"], panel["id"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "xywh"), panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"]), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]


def test_datasource_input_and_variables(dashboard: dict[str, Any]) -> None:
    inputs = {item["name"]: item for item in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "experiment"}
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    assert datasource["current"]["value"] == "${DS_PROMETHEUS}"  # the data source chosen on import
    experiment = variables["experiment"]
    assert experiment["type"] == "query" and experiment["datasource"] == DATASOURCE
    query = experiment["query"]["query"] if isinstance(experiment["query"], dict) else experiment["query"]
    assert query == experiment["definition"] == "label_values(gatewright_bench_runs, experiment)"
    assert experiment["multi"] and experiment["includeAll"]


def test_queries_use_exactly_the_exported_metrics_with_their_labels(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    for expr in _exprs(dashboard):
        selectors = SELECTOR.findall(expr)
        assert selectors, expr
        names = {name for name, _ in selectors}
        assert set(re.findall(r"\bgatewright_\w+", expr)) == names, f"a metric without a selector: {expr}"
        for name, body in selectors:
            assert name in METRICS, f"{name} is not exported: {expr}"
            matchers = [MATCHER.fullmatch(part) for part in body.split(",")]
            assert all(matchers), f"cannot read the matchers of {name}: {expr}"
            labels = {m.group(1): (m.group(2), m.group(3)) for m in matchers if m}
            assert set(labels) <= METRICS[name], f"{name} has no label {set(labels) - METRICS[name]}: {expr}"
            assert labels["experiment"] == ("=~", "$experiment"), expr
            if "quantile" in labels:
                assert labels["quantile"][1] in {"0.5", "0.9", "0.99"}, expr
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            grouping = {label.strip() for label in clause.split(",")}
            assert grouping <= set().union(*(METRICS[name] for name in names)), expr
        used |= names
    assert used == set(METRICS)


def _balanced(expr: str) -> bool:
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quoted = escaped = False
    for char in expr:
        if quoted:
            quoted, escaped = (not (char == '"' and not escaped)), (char == "\\" and not escaped)
        elif char == '"':
            quoted = True
        elif char in "([{":
            stack.append(char)
        elif char in closing and (not stack or stack.pop() != closing[char]):
            return False
    return not stack and not quoted


def test_queries_are_balanced(dashboard: dict[str, Any]) -> None:
    for expr in _exprs(dashboard):
        assert _balanced(expr), expr
    assert not _balanced('sum(foo{a="x"}') and not _balanced('foo{a="(" ]') and _balanced('foo{a=")"}')


def _grafana_free(expr: str) -> str:
    """The query with Grafana's variables replaced by what they may stand for."""
    return expr.replace("$__rate_interval", "1m").replace("$experiment", ".*")


def test_queries_parse_with_promtool(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Prometheus's own parser: every query as a recording rule, checked by ``promtool check rules``."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: prometheus; scripts/test.sh installs it)")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"query_{i}", "expr": _grafana_free(e)} for i, e in enumerate(_exprs(dashboard))],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules['groups'][0]['rules'])} rules found" in checked.stdout
    # and the check can fail: a broken query is refused
    path.write_text(json.dumps({"groups": [{"name": "x", "rules": [{"record": "q", "expr": "sum(up"}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(path)], capture_output=True).returncode != 0
