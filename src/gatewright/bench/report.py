"""The bench report: one self-contained HTML page (tables, inline SVG plots) and a flat CSV of the runs.

Both read run records as the database returns them (plain dicts, ``metrics`` nested). Any metric may be
missing: a table cell shows "–", a CSV cell stays empty, a plot leaves the point out. The Pareto front
of an application is taken over its succeeded runs: latency down, accuracy up, LUTs down.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib as mpl
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gatewright.errors import GatewrightError

Run = dict[str, Any]
Objective = tuple[str, str]  # (metric, "min" | "max")

FRONT: list[Objective] = [("latency_us", "min"), ("accuracy", "max"), ("luts", "min")]
RESOURCES = {"luts", "ffs", "dsps", "brams"}  # missing counts as 0 in a front: a CPU uses no FPGA resources
RUN_COLUMNS = [
    "id", "batch", "experiment", "application", "target", "device", "build_target", "predicted",
    "measurement", "scenario", "optimization", "state", "reason", "created",
]  # fmt: skip
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {  # CSV column: its path under "metrics"
    **{name: (name,) for name in ("accuracy", "float_accuracy", "agreement", "samples")},
    **{f"service_{q}_us": ("service_latency_us", q) for q in ("p50", "p90", "p99", "mean")},
    **{name: (name,) for name in ("percentile", "service_latency_at_percentile_us", "throughput", "valid")},
    **{name: (name,) for name in ("validity", "luts", "ffs", "dsps", "brams", "fmax_mhz", "latency_cycles")},
    **{name: (name,) for name in ("initiation_interval", "hw_latency_us", "latency_us", "build_s")},
}
# the HTML table's metric columns: (heading, path under "metrics")
TABLE_METRICS: list[tuple[str, tuple[str, ...]]] = [
    ("accuracy", ("accuracy",)),
    ("agreement", ("agreement",)),
    ("latency µs", ("latency_us",)),
    ("service p50 µs", ("service_latency_us", "p50")),
    ("service p99 µs", ("service_latency_us", "p99")),
    ("samples/s", ("throughput",)),
    ("LUTs", ("luts",)),
    ("Fmax MHz", ("fmax_mhz",)),
    ("build s", ("build_s",)),
]


def pareto_front(points: list[Run], objectives: list[Objective]) -> list[Run]:
    """The points no other point dominates (at least as good in every objective, strictly better in one).

    Objectives name metrics under ``point["metrics"]``. A missing FPGA resource (luts, ffs, dsps, brams)
    counts as 0; a point missing any other objective is left out. Equal points are all on the front.
    The front comes sorted by its objectives in order (best first), then by id.
    """
    for name, sense in objectives:
        if sense not in ("min", "max"):
            raise ValueError(f"objective {name!r}: sense must be 'min' or 'max', not {sense!r}")
    scored = [(key, point) for point in points if (key := _key(point, objectives)) is not None]
    front = [(key, p) for key, p in scored if not any(_dominates(other, key) for other, _ in scored)]
    front.sort(key=lambda kp: (kp[0], str(kp[1].get("id", ""))))
    return [p for _, p in front]


def _key(point: Run, objectives: list[Objective]) -> tuple[float, ...] | None:
    """The point's objective values, all to be minimized; None when one is missing."""
    key = []
    for name, sense in objectives:
        value = _number(point, (name,))
        if value is None and name in RESOURCES:
            value = 0.0
        if value is None:
            return None
        key.append(value if sense == "min" else -value)
    return tuple(key)


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether ``a`` dominates ``b``, both to be minimized."""
    return a != b and all(x <= y for x, y in zip(a, b, strict=True))


def _value(run: Run, path: tuple[str, ...]) -> Any:
    """The value at ``path`` under the run's metrics, or None."""
    value: Any = run.get("metrics")
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _number(run: Run, path: tuple[str, ...]) -> float | None:
    value = _value(run, path)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _front_members(records: Iterable[Run]) -> set[int]:
    """The identities (``id()``) of the runs on their application's front."""
    succeeded = [r for r in records if r.get("state") == "succeeded"]
    return {id(run) for runs in _by_application(succeeded).values() for run in pareto_front(runs, FRONT)}


def _by_application(records: Iterable[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in records:
        groups.setdefault(str(run.get("application") or "(none)"), []).append(run)
    return dict(sorted(groups.items()))


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and one rename: a reader sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else value


def write_csv(records: list[Run], path: Path | str) -> None:
    """One row per run: its fields, its metrics flattened, and ``on_pareto_front`` (true / false)."""
    front = _front_members(records)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*RUN_COLUMNS, *METRIC_COLUMNS, "on_pareto_front"])
    for run in records:
        fields = [_cell(run.get(name)) for name in RUN_COLUMNS]
        metrics = [_cell(_value(run, metric)) for metric in METRIC_COLUMNS.values()]
        writer.writerow([*fields, *metrics, _cell(id(run) in front)])
    _write_atomic(Path(path), buffer.getvalue())


def write_report(records: list[Run], out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` and ``out_dir/results.csv``; returns their paths."""
    out = Path(out_dir)
    html_path, csv_path = out / "report.html", out / "results.csv"
    try:
        write_html(records, html_path)
        write_csv(records, csv_path)
    except OSError as exc:
        raise GatewrightError(f"{out}: cannot write the report there ({exc.strerror}); choose another folder") from None
    return html_path, csv_path


# ---------------------------------------------------------------------------------------------- HTML

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; } td { white-space: nowrap; }
th { background: #f0f0f0; } td.text { text-align: left; }
td.reason { text-align: left; white-space: normal; min-width: 16em; }
tr.front { background: #eef7e8; } tr.failed { background: #fbeaea; }
.predicted { font-style: italic; color: #555; } .plots { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; max-width: 44em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    """A cell's text: "–" for nothing, 4 significant digits for small numbers, thousands for large."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return _e(value)


def write_html(records: list[Run], path: Path | str, title: str = "gatewright bench report") -> None:
    """One self-contained HTML page: per application a table of the runs and two plots, then the failures."""
    front = _front_members(records)
    failed = [r for r in records if r.get("state") == "failed"]
    states = Counter(str(r.get("state")) for r in records)
    experiments = sorted({str(r.get("experiment") or "") for r in records} - {""})
    now = datetime.now(UTC).isoformat(timespec="seconds")
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>',
        f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>",
        f"<p>{len(records)} runs ({_e(', '.join(f'{n} {state}' for state, n in sorted(states.items())))}) in "
        f"{len(experiments)} experiments: {_e(', '.join(experiments)) or '–'}. Created {now}.</p>",
        "<p>★: on the application's Pareto front (succeeded runs; latency down, accuracy up, LUTs down). "
        '<span class="predicted">Italic</span>: predicted by a model of the tool chain, not built. Latency: the '
        "FPGA's own (cycles over Fmax) on FPGA targets, else the measured headline latency.</p>",
    ]
    for application, runs in _by_application(records).items():
        parts.append(_application_section(application, runs, front))
    parts.append(f"<h2>Failed runs</h2>{_failed_table(failed) if failed else '<p>None.</p>'}</body></html>\n")
    _write_atomic(Path(path), "\n".join(parts))


def _application_section(application: str, runs: list[Run], front: set[int]) -> str:
    succeeded = [r for r in runs if r.get("state") == "succeeded"]
    plots = [
        (
            _latency_vs_luts(succeeded, application),
            "Latency against LUTs, colored by accuracy. Hollow markers: predicted. "
            "Squares: runs without LUTs (CPU), drawn at the left edge.",
        ),
        (
            _accuracy_vs_latency(succeeded, application),
            "Accuracy against latency; the step line is the Pareto front of these two (ringed points). "
            "Hollow markers: predicted.",
        ),
    ]
    figures = "".join(f"<figure>{svg}<figcaption>{caption}</figcaption></figure>" for svg, caption in plots)
    return f'<section><h2>{_e(application)}</h2>{_runs_table(runs, front)}<div class="plots">{figures}</div></section>'


def _runs_table(runs: list[Run], front: set[int]) -> str:
    headings = ["", "target", "device", "build target", "optimization", "scenario", "state"]
    headings += [heading for heading, _ in TABLE_METRICS] + ["valid", "id", "reason"]
    ordered = sorted(runs, key=lambda r: (str(r.get("target")), str(r.get("optimization")), str(r.get("id"))))
    rows = "\n".join(_run_row(run, id(run) in front) for run in ordered)
    return f"<table><tr>{''.join(f'<th>{h}</th>' for h in headings)}</tr>\n{rows}</table>"


def _run_row(run: Run, on_front: bool) -> str:
    fields = _value(run, ("predicted_fields",))
    predicted = set(fields) if run.get("predicted") and isinstance(fields, list) else set()
    target = _e(run.get("target") or "–")
    if run.get("predicted"):
        target += ' <span class="predicted">(predicted)</span>'
    cells = ["★" if on_front else "", target]
    cells += [_fmt(run.get(key)) for key in ("device", "build_target", "optimization", "scenario", "state")]
    row = [f'<td class="text">{cell}</td>' for cell in cells]
    for _, path in TABLE_METRICS:
        mark = ' class="predicted" title="predicted"' if path[0] in predicted else ""
        row.append(f"<td{mark}>{_fmt(_value(run, path))}</td>")
    validity = _value(run, ("validity",)) or _value(run, ("valid",))
    row.append(f'<td title="{_e(_value(run, ("invalid_reason",)) or "")}">{_fmt(validity)}</td>')
    row.append(f'<td class="text">{_fmt(run.get("id"))}</td><td class="reason">{_e(run.get("reason") or "")}</td>')
    css = "front" if on_front else "failed" if run.get("state") == "failed" else ""
    return f'<tr class="{css}">{"".join(row)}</tr>'


def _failed_table(failed: list[Run]) -> str:
    keys = ["experiment", "application", "target", "optimization", "id", "created", "reason"]
    rows = [
        "".join(f'<td class="{"reason" if k == "reason" else "text"}">{_fmt(run.get(k))}</td>' for k in keys)
        for run in failed
    ]
    return f"<table><tr>{''.join(f'<th>{k}</th>' for k in keys)}</tr><tr>{'</tr><tr>'.join(rows)}</tr></table>"


# --------------------------------------------------------------------------------------------- plots


def _label(text: Any) -> str:
    """Text for matplotlib: a "$" would start mathtext."""
    return str(text).replace("$", r"\$")


def _svg(figure: Figure, salt: str) -> str:
    """The figure as an inline <svg> element: text kept as text, no metadata, ids fixed by ``salt``."""
    buffer = io.StringIO()
    with mpl.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # without the XML declaration and DOCTYPE


class _Point(NamedTuple):
    run: Run
    latency: float
    accuracy: float | None
    luts: float | None  # None: the run has no LUTs (a CPU)


def _points(runs: list[Run]) -> list[_Point]:
    """The runs with a latency, as plot points."""
    points = []
    for run in runs:
        latency, luts = _number(run, ("latency_us",)), _number(run, ("luts",))
        if latency is not None and latency > 0:
            points.append(_Point(run, latency, _number(run, ("accuracy",)), luts if luts and luts > 0 else None))
    return points


def _latency_vs_luts(runs: list[Run], application: str) -> str:
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    points = _points(runs)
    accuracies = [p.accuracy for p in points if p.accuracy is not None]
    low, high = (min(accuracies), max(accuracies)) if accuracies else (0.0, 1.0)
    norm = Normalize(low - 0.005, high + 0.005) if low == high else Normalize(low, high)
    cmap = mpl.colormaps["viridis"]
    luts = [p.luts for p in points if p.luts is not None]
    edge = min(luts) / 3 if luts else 1.0  # where the runs without LUTs go
    groups: dict[str, list[_Point]] = {"measured": [], "predicted": [], "cpu": []}
    for point in points:
        groups["cpu" if point.luts is None else "predicted" if point.run.get("predicted") else "measured"].append(point)
    for kind, marker, filled in [("measured", "o", True), ("predicted", "o", False), ("cpu", "s", True)]:
        if chosen := groups[kind]:
            colors = [cmap(norm(p.accuracy)) if p.accuracy is not None else "grey" for p in chosen]
            xs, ys = [edge if p.luts is None else p.luts for p in chosen], [p.latency for p in chosen]
            face: Any = colors if filled else "none"
            ax.scatter(xs, ys, marker=marker, s=40, facecolors=face, edgecolors=colors, linewidths=1.5, zorder=2)
    ax.set(xscale="log", yscale="log", xlabel="LUTs", ylabel="latency (µs)", title=_label(application))
    ax.set_xlim(left=edge / 1.5)
    ax.grid(True, which="both", alpha=0.25)
    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="accuracy")
    handles = [
        Line2D([], [], ls="", marker="o", color="grey", label="measured"),
        Line2D([], [], ls="", marker="o", color="grey", markerfacecolor="none", label="predicted"),
        Line2D([], [], ls="", marker="s", color="grey", label="no LUTs (CPU)"),
    ]
    ax.legend(handles=handles, fontsize="small", loc="best")
    if not points:
        ax.text(0.5, 0.5, "no succeeded runs with a latency", transform=ax.transAxes, ha="center")
    return _svg(figure, f"{application}/latency-luts")


def _accuracy_vs_latency(runs: list[Run], application: str) -> str:
    figure = Figure(figsize=(7.2, 4.2), layout="constrained")
    ax = figure.add_subplot()
    points = [(p.run, p.latency, p.accuracy) for p in _points(runs) if p.accuracy is not None]
    targets = sorted({str(run.get("target")) for run, _, _ in points})
    optimizations = sorted({str(run.get("optimization")) for run, _, _ in points})
    colors = {target: f"C{i % 10}" for i, target in enumerate(targets)}
    markers = {opt: "osD^vP*X<>ph"[i % 11] for i, opt in enumerate(optimizations)}
    for run, x, y in points:
        color, marker = colors[str(run.get("target"))], markers[str(run.get("optimization"))]
        face = "none" if run.get("predicted") else color
        ax.scatter([x], [y], marker=marker, s=40, facecolors=face, edgecolors=color, linewidths=1.5, zorder=3)
    on_front = {id(run) for run in pareto_front([run for run, _, _ in points], FRONT[:2])}
    front = sorted((x, y) for run, x, y in points if id(run) in on_front)
    if front:
        xs, ys = [x for x, _ in front], [y for _, y in front]
        ax.step(xs, ys, where="post", color="black", linewidth=1, zorder=2)
        ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="black", linewidths=1, zorder=2)
    ax.set(xscale="log", xlabel="latency (µs)", ylabel="accuracy", title=_label(application))
    ax.grid(True, which="both", alpha=0.25)
    handles = [Line2D([], [], ls="", marker="o", color=colors[t], label=_label(t)) for t in targets]
    handles += [Line2D([], [], ls="", marker=markers[o], color="grey", label=_label(o)) for o in optimizations]
    handles.append(Line2D([], [], color="black", marker="o", markerfacecolor="none", ms=10, label="Pareto front"))
    figure.legend(handles=handles, loc="outside right upper", fontsize="small")
    if not points:
        ax.text(0.5, 0.5, "no succeeded runs with latency and accuracy", transform=ax.transAxes, ha="center")
    return _svg(figure, f"{application}/accuracy-latency")
