"""The bench report: the Pareto front, the CSV of the runs and the self-contained HTML page."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

import pytest

from gatewright.bench.report import pareto_front, write_csv, write_html, write_report

MALICIOUS = "<script>alert(1)</script>"
OPTIMIZATIONS = {  # optimization: (accuracy, luts, latency in cycles)
    "weight_bits=8": (0.974, 6000, 8),
    "weight_bits=4": (0.968, 3151, 7),
    "weight_bits=2": (0.900, 1500, 6),
}
FMAX = {"ecp5-85k": 80.0, "ecp5-25k": 60.0}  # the 25k runs are slower, otherwise the same: never on the front


def _run(run_id: str, target: str, optimization: str, application: str = "digits", **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": run_id,
        "batch": "20261121-1530-ab12",
        "experiment": "digits-sweep",
        "application": application,
        "target": target,
        "device": target.split("-")[0],
        "build_target": None,
        "predicted": False,
        "measurement": "latency",
        "scenario": "SingleStream",
        "optimization": optimization,
        "state": "succeeded",
        "reason": "",
        "created": "2026-11-21T15:30:00+00:00",
        "config": {"model": {"path": "digits.onnx"}},
        "metrics": {},
    }
    record.update(fields)
    return record


def _fpga(run_id: str, device: str, build_target: str, optimization: str) -> dict[str, Any]:
    accuracy, luts, cycles = OPTIMIZATIONS[optimization]
    fmax = FMAX[build_target]
    metrics = {
        "accuracy": accuracy,
        "float_accuracy": 0.975,
        "agreement": 0.99,
        "samples": 540,
        "service_latency_us": {"p50": 120.5, "p90": 130.1, "p99": 180.2, "mean": 125.0},
        "percentile": 90,
        "service_latency_at_percentile_us": 130.1,
        "throughput": 7650.2,
        "valid": True,
        "validity": "VALID",
        "luts": luts,
        "ffs": 1200,
        "dsps": 4,
        "brams": 0,
        "fmax_mhz": fmax,
        "latency_cycles": cycles,
        "initiation_interval": 1,
        "hw_latency_us": cycles / fmax,
        "latency_us": cycles / fmax,
        "build_s": 95.2,
    }
    target = f"{device}-{build_target.removeprefix('ecp5-')}"
    return _run(run_id, target, optimization, device=device, build_target=build_target, metrics=metrics)


def _records() -> list[dict[str, Any]]:
    cpu = _run(
        "cpu-float",
        "cpu",
        "float",
        metrics={
            "accuracy": 0.975,
            "float_accuracy": 0.975,
            "agreement": 1.0,
            "latency_us": 120.0,
            "service_latency_us": {"p50": 110.0, "p90": 120.0, "p99": 150.0, "mean": 112.0},
            "throughput": 8000.0,
            "valid": True,
            "validity": "VALID",
            "luts": None,
        },
    )
    fpga = [
        _fpga(f"{device}-{build[5:]}-w{optimization[-1]}", device, build, optimization)
        for device in ("emu", "sim")
        for build in FMAX
        for optimization in OPTIMIZATIONS
    ]
    # predicted: it beats the measured sim-85k and emu-85k weight_bits=4 runs, which leave the front
    predicted = _run(
        "pred-85k-w4",
        "sim-85k-pred",
        "weight_bits=4",
        build_target="ecp5-85k",
        predicted=True,
        scenario=None,
        metrics={
            "accuracy": 0.968,
            "luts": 3000,
            "fmax_mhz": 87.5,
            "latency_cycles": 7,
            "hw_latency_us": 0.08,
            "latency_us": 0.08,
            "service_latency_us": None,
            "throughput": None,
            "predicted_fields": ["luts", "fmax_mhz", "latency_cycles", "hw_latency_us", "latency_us"],
        },
    )
    failed = _run(
        "sim-25k-w1",
        "sim-25k",
        "weight_bits=1",
        state="failed",
        reason=f"nextpnr: design does not fit (LUT4 30000/24000) {MALICIOUS}",
        metrics={"accuracy": 0.99, "latency_us": 0.01, "luts": 10},  # partial, and better than all: ignored
    )
    other = [  # a second application, with its own front, and names that must be escaped
        _run("kws-cpu", "cpu", MALICIOUS, application="kws", experiment=MALICIOUS,
             metrics={"accuracy": 0.8, "latency_us": 300.0}),
        _run("kws-sim", "sim-85k", "scale=$x$", application="kws", experiment=MALICIOUS,
             metrics={"accuracy": 0.7, "latency_us": 0.01, "luts": 90}),
        _run("kws-slow", "sim-85k", "weight_bits=8", application="kws",
             metrics={"accuracy": 0.7, "latency_us": 0.02, "luts": 90}),
    ]  # fmt: skip
    only_failed = _run("vib-1", "sim-85k", "float", application="vibration", state="failed", reason="yosys crashed")
    only_failed["metrics"] = None
    return [cpu, *fpga, predicted, failed, *other, only_failed]


FRONT = {  # per application, over succeeded runs: latency min, accuracy max, luts min
    "cpu-float", "emu-85k-w8", "sim-85k-w8", "pred-85k-w4", "emu-85k-w2", "sim-85k-w2",  # digits
    "kws-cpu", "kws-sim",  # kws
}  # fmt: skip


def _point(point_id: str, **metrics: Any) -> dict[str, Any]:
    return {"id": point_id, "metrics": metrics}


def _ids(points: list[dict[str, Any]]) -> list[str]:
    return [p["id"] for p in points]


OBJECTIVES = [("latency_us", "min"), ("accuracy", "max"), ("luts", "min")]


def test_pareto_front_keeps_ties_counts_missing_luts_as_zero_and_drops_missing_objectives() -> None:
    points = [
        _point("b", latency_us=2.0, accuracy=0.95, luts=100),
        _point("c", latency_us=2.0, accuracy=0.90, luts=100),  # dominated by a
        _point("d", latency_us=1.0, accuracy=0.90, luts=100),  # a tie with a: both on the front
        _point("a", latency_us=1.0, accuracy=0.90, luts=100),
        _point("cpu", latency_us=50.0, accuracy=0.97),  # no LUTs: counts as 0, and the best accuracy
        _point("no-accuracy", latency_us=0.5, luts=1),
        _point("none-accuracy", latency_us=0.5, accuracy=None, luts=1),
        _point("nan-latency", latency_us=math.nan, accuracy=0.99, luts=1),
        {"id": "no-metrics", "metrics": None},
        {"id": "nothing"},
    ]
    front = pareto_front(points, OBJECTIVES)
    assert _ids(front) == ["a", "d", "b", "cpu"]  # by latency, then accuracy (best first), LUTs, id
    assert _ids(pareto_front(list(reversed(points)), OBJECTIVES)) == ["a", "d", "b", "cpu"]


def test_pareto_front_a_run_without_luts_dominates_an_equal_one_with_luts() -> None:
    points = [_point("fpga", latency_us=1.0, accuracy=0.9, luts=10), _point("cpu", latency_us=1.0, accuracy=0.9)]
    assert _ids(pareto_front(points, OBJECTIVES)) == ["cpu"]
    # a missing objective other than a resource leaves the point out
    assert _ids(pareto_front(points, [("latency_us", "min"), ("fmax_mhz", "max")])) == []


def test_pareto_front_two_objectives_and_edge_cases() -> None:
    points = [
        _point("fast", latency_us=1.0, accuracy=0.8),
        _point("accurate", latency_us=10.0, accuracy=0.99),
        _point("worse", latency_us=10.0, accuracy=0.8),
        _point("middle", latency_us=5.0, accuracy=0.9),
    ]
    assert _ids(pareto_front(points, OBJECTIVES[:2])) == ["fast", "middle", "accurate"]
    assert pareto_front([], OBJECTIVES) == []
    with pytest.raises(ValueError, match="sense"):
        pareto_front(points, [("latency_us", "lowest")])


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_report(_records(), tmp_path_factory.mktemp("report"))


def test_write_report_writes_both_files_and_nothing_else(report: tuple[Path, Path]) -> None:
    html_path, csv_path = report
    assert (html_path.name, csv_path.name) == ("report.html", "results.csv")
    assert sorted(p.name for p in html_path.parent.iterdir()) == ["report.html", "results.csv"]


def test_csv_has_one_row_per_run_with_flat_metrics_and_the_front(report: tuple[Path, Path]) -> None:
    with report[1].open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    records = _records()
    assert [row["id"] for row in rows] == [r["id"] for r in records]
    assert {row["id"] for row in rows if row["on_pareto_front"] == "true"} == FRONT
    assert {row["on_pareto_front"] for row in rows} == {"true", "false"}
    by_id = {row["id"]: row for row in rows}
    cpu = by_id["cpu-float"]
    assert cpu["build_target"] == cpu["luts"] == cpu["fmax_mhz"] == ""
    assert (cpu["predicted"], cpu["valid"], cpu["accuracy"], cpu["service_p99_us"]) == (
        "false",
        "true",
        "0.975",
        "150.0",
    )
    sim = by_id["sim-85k-w4"]
    assert (sim["build_target"], sim["luts"], sim["latency_cycles"], sim["fmax_mhz"]) == (
        "ecp5-85k",
        "3151",
        "7",
        "80.0",
    )
    assert float(sim["latency_us"]) == pytest.approx(7 / 80)
    assert (sim["service_p50_us"], sim["service_p90_us"], sim["service_mean_us"]) == ("120.5", "130.1", "125.0")
    assert (sim["percentile"], sim["service_latency_at_percentile_us"], sim["throughput"]) == ("90", "130.1", "7650.2")
    assert (sim["validity"], sim["build_s"], sim["on_pareto_front"]) == ("VALID", "95.2", "false")
    predicted = by_id["pred-85k-w4"]
    assert (predicted["predicted"], predicted["scenario"], predicted["throughput"]) == ("true", "", "")
    failed = by_id["sim-25k-w1"]
    assert (failed["state"], failed["on_pareto_front"], failed["accuracy"]) == ("failed", "false", "0.99")
    assert failed["reason"].endswith(MALICIOUS)  # CSV is data: kept as it is
    assert by_id["vib-1"]["accuracy"] == ""


def test_write_csv_alone_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("old")
    write_csv(_records()[:1], path)
    assert path.read_text().splitlines()[1].startswith("cpu-float,")
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


@pytest.fixture(scope="module")
def page(report: tuple[Path, Path]) -> str:
    return report[0].read_text(encoding="utf-8")


def test_html_lists_every_run_and_the_failure_reasons(page: str) -> None:
    for record in _records():
        assert f">{record['id']}<" in page
    assert "nextpnr: design does not fit (LUT4 30000/24000)" in page
    assert "yosys crashed" in page
    assert "19 runs" in page and "17 succeeded" in page and "2 failed" in page
    failed_section = page[page.index("<h2>Failed runs</h2>") :]
    assert "sim-25k-w1" in failed_section and "vib-1" in failed_section and "cpu-float" not in failed_section


def test_html_has_two_plots_per_application(page: str) -> None:
    sections = re.findall(r"<section><h2>(.*?)</h2>(.*?)</section>", page, re.S)
    assert [name for name, _ in sections] == ["digits", "kws", "vibration"]
    for _, body in sections:
        assert body.count("<svg") == 2
    assert page.count("<svg") == 6


def test_html_marks_the_front_and_predicted_values(page: str) -> None:
    rows = re.findall(r'<tr class="(\w*)">(.*?)</tr>', page, re.S)

    def ids(css: str) -> set[str]:  # the id cell of each row of that class
        return {re.findall(r'<td class="text">([\w-]+)</td>', row)[-1] for c, row in rows if c == css}

    assert ids("front") == FRONT
    assert ids("failed") == {"sim-25k-w1", "vib-1"}
    predicted_row = next(row for _, row in rows if "pred-85k-w4" in row)
    assert "(predicted)" in predicted_row
    assert '<td class="predicted" title="predicted">3,000</td>' in predicted_row  # LUTs: predicted
    assert '<td class="predicted" title="predicted">87.5</td>' in predicted_row  # Fmax: predicted
    assert "<td>0.968</td>" in predicted_row  # accuracy: measured
    assert predicted_row.count("<td>–</td>") >= 3  # no service latency, no throughput


def test_html_escapes_names_and_is_self_contained(page: str) -> None:
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "scale=$x$" in page  # in the table, and not taken for mathtext in the plot legend
    assert 'src="http' not in page and 'href="http' not in page
    assert "http" not in re.sub(r'xmlns(:\w+)?="http[^"]*"', "", page)  # only SVG namespace names
    assert not re.search(r"url\((?!#)", page)  # inline SVG refers only to its own ids
    assert "<link" not in page and "@import" not in page


def test_write_html_with_a_title_and_no_runs(tmp_path: Path) -> None:
    path = tmp_path / "out" / "empty.html"
    write_html([], path, title="<b>bench</b>")
    page = path.read_text(encoding="utf-8")
    assert "<title>&lt;b&gt;bench&lt;/b&gt;</title>" in page
    assert "0 runs" in page and "<svg" not in page


def test_an_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    from gatewright.errors import GatewrightError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(GatewrightError, match="a-file/out: cannot write the report there"):
        write_report([], blocker / "out")
    assert blocker.read_text() == "not a folder"
