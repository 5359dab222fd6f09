"""CLI: ``gatewright bench run | report | results | predictor | measure`` and ``gatewright advise``."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gatewright.errors import GatewrightError

DataOption = Annotated[Path, typer.Option(help="The control plane's data folder (its database holds the results).")]
DbOption = Annotated[
    str | None, typer.Option(help="Database URL (default: sqlite in --data, as `gatewright control` uses).")
]
ExperimentOption = Annotated[
    list[str] | None, typer.Option("--experiment", "-e", help="Only this experiment (repeatable).")
]


def _sessions(data: Path, db: str | None) -> Any:
    from gatewright.control.db import database_url, open_database

    data.mkdir(parents=True, exist_ok=True)
    return open_database(database_url(db, data.resolve()))


def _stored(data: Path, db: str | None, **filters: Any) -> list[dict[str, Any]]:
    """The stored bench results; none (and nothing created) where the default database does not exist yet."""
    from gatewright.bench.runner import records

    if db is None and not (data / "gatewright.db").exists():
        return []
    return records(_sessions(data, db), **filters)


def _build_slots() -> int:
    """Builds this machine runs at once: one per core, and at most one per 2 GB of memory (place and
    route of a large design takes about that)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        memory_gb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        return cores
    return max(1, min(cores, int(memory_gb // 2)))


def register(app: typer.Typer, user_errors: Callable[[Any], Any], out: Console, err: Console) -> None:
    """Add ``bench`` (a command group) and ``advise`` to the CLI."""
    bench = typer.Typer(help="Run one model on many targets; compare, report, predict.", no_args_is_help=True)
    app.add_typer(bench, name="bench")
    say = lambda line: out.print(line, highlight=False, markup=False, soft_wrap=True)  # noqa: E731

    @bench.command("run")
    @user_errors
    def run(
        file: Annotated[Path, typer.Argument(help="Experiment file (YAML).", show_default=False)],
        experiment: ExperimentOption = None,
        data: DataOption = Path("gatewright-data"),
        db: DbOption = None,
        builds: Annotated[int, typer.Option(help="Build jobs at once (default: one per core, memory allowing).")] = 0,
        measures: Annotated[
            int, typer.Option(help="Measurements at once (default 1: side by side they disturb each other).")
        ] = 1,
        metrics_port: Annotated[
            int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics of the runs on this port.")
        ] = None,
        report: Annotated[Path | None, typer.Option(help="Write the HTML report and CSV of this batch here.")] = None,
        check: Annotated[
            bool, typer.Option("--check", help="Validate the file and list its runs; run nothing.")
        ] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every line of every job.")] = False,
    ) -> None:
        """Validate an experiment file, then build and measure every run in it; results go to the database."""
        from gatewright.bench import config
        from gatewright.bench.metrics import BenchMetrics
        from gatewright.bench.report import write_report
        from gatewright.bench.runner import BenchRunner, batch_id

        experiments = config.load(file)
        runs = experiments.runs(experiment)
        say(f"{file}: valid, {len(runs)} runs in {len({r.experiment for r in runs})} experiment(s)")
        if check:
            table = Table("experiment", "application", "target", "device", "build", "optimization", "measurement")
            for r in runs:
                build = r.target.build or (f"{r.target.predict} (predicted)" if r.target.predict else "-")
                device = "emu" if r.target.predict else r.target.device
                table.add_row(
                    r.experiment,
                    r.application.name,
                    r.target.name,
                    device,
                    build,
                    r.optimization.name,
                    r.measurement.name,
                )
            out.print(table)
            return
        if builds < 0 or measures < 1:
            raise GatewrightError("--builds must be 0 (as many as the machine allows) or more, --measures 1 or more")
        metrics = BenchMetrics()
        if metrics_port is not None:
            metrics.serve(metrics_port)
            say(f"metrics: http://127.0.0.1:{metrics_port}/metrics")
        batch, builds = batch_id(), builds or _build_slots()
        say(f"batch {batch}: {builds} build(s) and {measures} measurement(s) at once")
        runner = BenchRunner(_sessions(data, db), data.resolve(), builds, measures, say, metrics, verbose)
        rows = asyncio.run(runner.run(runs, batch))
        _table(out, rows)
        failed = [r for r in rows if r["state"] != "succeeded"]
        if report is not None:
            html, csv = write_report(rows, report)
            say(f"report: {html}\nresults: {csv}")
        if failed:
            raise GatewrightError(f"{len(failed)} of {len(rows)} runs failed (see the reasons above)")

    @bench.command("measure", hidden=True)
    @user_errors
    def measure(
        spec: Annotated[Path, typer.Argument(help="A run, as JSON (what `bench run` writes).")],
        model: Annotated[Path, typer.Option(help="The float model (local file).")],
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for result.json and LoadGen's logs.")],
        bundle: Annotated[Path | None, typer.Option(help="The firmware bundle (none on cpu).")] = None,
    ) -> None:
        """Measure one run (a bench job runs this in its own process)."""
        from gatewright.bench.config import Run
        from gatewright.bench.measure import measure as measure_run
        from gatewright.bench.measure import write_result
        from gatewright.bench.predictor import bundle_features
        from gatewright.build.bundle import Bundle

        run = Run.from_json(json.loads(spec.read_text()))
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics = measure_run(run, model, bundle, say, out_dir / "loadgen")
        if bundle is not None and (run.target.build or run.target.predict):
            target = str(run.target.build or run.target.predict)
            if target != "generic":
                metrics["features"] = bundle_features(Bundle(bundle), target, run.optimization.hardware_options())
        write_result(out_dir / "result.json", metrics)

    @bench.command("report")
    @user_errors
    def report_command(
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for report.html and results.csv.")],
        experiment: ExperimentOption = None,
        batch: Annotated[str | None, typer.Option(help="Only this batch (one `bench run`).")] = None,
        data: DataOption = Path("gatewright-data"),
        db: DbOption = None,
    ) -> None:
        """Write the HTML report (tables, plots, Pareto fronts) and a CSV of the stored results."""
        from gatewright.bench.report import write_report

        rows = _stored(data, db, experiments=experiment, batch=batch)
        if not rows:
            raise GatewrightError("no bench results match; run `gatewright bench run EXPERIMENTS.yaml` first")
        html, csv = write_report(rows, out_dir)
        say(f"{len(rows)} runs\nreport: {html}\nresults: {csv}")

    @bench.command("results")
    @user_errors
    def results(
        experiment: ExperimentOption = None,
        batch: Annotated[str | None, typer.Option(help="Only this batch.")] = None,
        output: Annotated[str, typer.Option("-o", "--output", help="table or json.")] = "table",
        data: DataOption = Path("gatewright-data"),
        db: DbOption = None,
    ) -> None:
        """List the stored bench results."""

        if output not in ("table", "json"):
            raise GatewrightError(f"-o {output}: choose table or json")
        rows = _stored(data, db, experiments=experiment, batch=batch)
        if output == "json":
            out.print_json(json.dumps(rows, default=str))
        else:
            _table(out, rows)

    @bench.command("predictor")
    @user_errors
    def predictor(
        family: Annotated[str | None, typer.Option(help="Only builds for this FPGA family (ecp5, ice40).")] = None,
        output: Annotated[str, typer.Option("-o", "--output", help="table or json.")] = "table",
        data: DataOption = Path("gatewright-data"),
        db: DbOption = None,
    ) -> None:
        """Learn the predictor from the stored results and show its cross-validated error."""
        from gatewright.bench.predictor import Predictor

        learned = Predictor.learn(_stored(data, db), family)
        errors = learned.errors()
        if output == "json":
            out.print_json(json.dumps(errors))
            return
        table = Table(
            "quantity",
            "method",
            "CV mean abs % error",
            "CV median abs % error",
            "folds",
            "builds",
            "candidates (mean abs % error)",
            title="predictor, cross-validated on held-out models",
        )
        for e in errors:
            table.add_row(
                e["quantity"],
                e["method"],
                f"{e['cv_mape']:.1%}",
                f"{e['cv_median_ape']:.1%}",
                str(e["folds"]),
                str(e["samples"]),
                ", ".join(f"{k} {v:.1%}" for k, v in e["candidates"].items()),
            )
        out.print(table)

    @app.command()
    @user_errors
    def advise(
        model: Annotated[Path, typer.Argument(help="An ONNX model file.", show_default=False)],
        data_file: Annotated[
            Path, typer.Option("--inputs", help="Input samples (.npy/.npz/.csv) to measure accuracy.")
        ],
        labels: Annotated[
            Path | None, typer.Option(help="Labels of --data (else: agreement with the float model).")
        ] = None,
        calibration: Annotated[Path | None, typer.Option(help="Calibration samples (default: --inputs).")] = None,
        scale: Annotated[float, typer.Option(help="Preprocessing: multiply the samples by this.")] = 1.0,
        offset: Annotated[float, typer.Option(help="Preprocessing: then add this.")] = 0.0,
        max_latency_us: Annotated[float | None, typer.Option("--max-latency-us", help="FPGA latency limit.")] = None,
        min_accuracy: Annotated[float | None, typer.Option("--min-accuracy", help="0..1, e.g. 0.95.")] = None,
        max_luts: Annotated[int | None, typer.Option("--max-luts", help="LUT limit.")] = None,
        family: Annotated[str | None, typer.Option(help="Only this FPGA family: ecp5 or ice40.")] = None,
        target: Annotated[list[str] | None, typer.Option(help="Only these targets (repeatable).")] = None,
        show: Annotated[int, typer.Option(help="How many configurations to list.")] = 10,
        run_best: Annotated[int, typer.Option("--run", help="Build and measure the best N on the simulator.")] = 0,
        data: DataOption = Path("gatewright-data"),
        db: DbOption = None,
    ) -> None:
        """List the configurations that can meet the constraints, best first; optionally build and measure them."""
        from gatewright.bench import advisor
        from gatewright.bench.data import Preprocessing, load_array, load_labels

        if min_accuracy is not None and not 0 <= min_accuracy <= 1:
            raise GatewrightError(f"--min-accuracy {min_accuracy}: give a fraction between 0 and 1 (0.95 for 95%)")
        prep = Preprocessing(scale=scale, offset=offset)
        x = prep.apply(load_array(data_file))
        y = load_labels(labels) if labels is not None else None
        if y is not None and len(y) != len(x):
            raise GatewrightError(f"--labels {labels}: {len(y)} labels for {len(x)} samples in --inputs {data_file}")
        cal = prep.apply(load_array(calibration)) if calibration is not None else None
        constraints = advisor.Constraints(max_latency_us, min_accuracy, max_luts, family, tuple(target or ()))
        candidates, note = advisor.advise(model, constraints, x, y, cal, _stored(data, db))
        say(f"estimates: {note}")
        table = Table(
            "#",
            "configuration",
            "meets",
            "accuracy",
            "LUTs",
            "DSPs",
            "Fmax MHz",
            "cycles",
            "FPGA latency us",
            "why not",
            title="configurations, best first",
        )
        for index, c in enumerate(candidates[:show], 1):
            e = c.estimate
            table.add_row(
                str(index),
                c.name,
                "yes" if c.meets else "no",
                "-"
                if c.accuracy is None
                else f"{c.accuracy:.2%}" + (" (agreement)" if c.accuracy_kind != "accuracy" else ""),
                _num(e.get("luts")),
                _num(e.get("dsps")),
                _num(e.get("fmax_mhz"), 1),
                _num(e.get("latency_cycles")),
                _num(e.get("hw_latency_us"), 3),
                "; ".join(c.why),
            )
        out.print(table)
        meeting = [c for c in candidates if c.meets]
        if not meeting:
            say("no configuration meets every constraint; relax one, or see 'why not' above")
        if run_best <= 0:
            return
        if not meeting:
            raise GatewrightError("--run: nothing meets the constraints, so nothing was built")
        from gatewright.bench import config
        from gatewright.bench.runner import BenchRunner, batch_id

        chosen = meeting[:run_best]
        folder = data.resolve() / "advice"
        folder.mkdir(parents=True, exist_ok=True)
        spec = advisor.experiment_file(
            chosen, model, data_file, labels, calibration, folder / f"{model.stem}.yaml", scale=scale, offset=offset
        )
        say(f"experiment: {spec}")
        runner = BenchRunner(_sessions(data, db), data.resolve(), _build_slots(), 1, say)
        rows = asyncio.run(runner.run(config.load(spec).runs(), batch_id()))
        verdict = Table(
            "configuration",
            "accuracy (predicted)",
            "LUTs (predicted)",
            "Fmax MHz (predicted)",
            "FPGA latency us (predicted)",
            "meets",
            title="built and measured",
        )
        for row, c in zip(rows, chosen, strict=True):
            m = row["metrics"]
            measured = advisor.Candidate(
                c.target,
                c.weight_bits,
                c.activation_bits,
                accuracy=m.get("accuracy"),
                accuracy_kind=c.accuracy_kind,
                estimate=m,
            )
            if c.accuracy_kind != "accuracy":
                measured.accuracy = m.get("agreement")
            advisor.judge(measured, constraints)
            verdict.add_row(
                c.name,
                f"{_num(measured.accuracy, 4)} ({_num(c.accuracy, 4)})",
                f"{_num(m.get('luts'))} ({_num(c.estimate.get('luts'))})",
                f"{_num(m.get('fmax_mhz'), 1)} ({_num(c.estimate.get('fmax_mhz'), 1)})",
                f"{_num(m.get('hw_latency_us'), 3)} ({_num(c.estimate.get('hw_latency_us'), 3)})",
                "yes"
                if row["state"] == "succeeded" and measured.meets
                else f"no: {row['reason'] or '; '.join(measured.why)}",
            )
        out.print(verdict)


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _table(out: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(
        "experiment",
        "target",
        "optimization",
        "measurement",
        "state",
        "accuracy",
        "p50 us",
        "headline us",
        "samples/s",
        "LUTs",
        "Fmax MHz",
        "FPGA latency us",
        title="bench results",
    )
    for r in rows:
        m = r.get("metrics") or {}
        pred = " (pred.)" if r.get("predicted") else ""
        table.add_row(
            r["experiment"],
            r["target"],
            r["optimization"],
            r["measurement"],
            r["state"] if r["state"] == "succeeded" else f"{r['state']}: {r['reason'][:60]}",
            "-" if m.get("accuracy") is None else f"{m['accuracy']:.2%}",
            _num((m.get("service_latency_us") or {}).get("p50"), 1),
            _num(m.get("service_latency_at_percentile_us"), 1),
            _num(m.get("throughput")),
            _num(m.get("luts")) + (pred if m.get("luts") is not None else ""),
            _num(m.get("fmax_mhz"), 1),
            _num(m.get("hw_latency_us"), 3),
        )
    out.print(table)
