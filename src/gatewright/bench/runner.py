"""Run an experiment file's runs: build each distinct firmware once, measure every run, keep the results.

Builds and measurements are jobs of the control plane's job runner (``control.jobs``): each is a
``gatewright`` command in its own process, its output kept line by line in the database. Builds run
``--builds`` at a time (independent, CPU-bound); measurements run ``--measures`` at a time (one by
default: measurements side by side would share the cores and disturb each other's latencies). A
run's row in ``bench_runs`` goes queued -> building -> measuring -> succeeded | failed.

Predicted targets (``<target>-pred``) quantize only (no hardware is built), measure the exact
quantized accuracy on the emulator, and take resources, Fmax and latency from the predictor, which
learns from every measured FPGA build in the database, this batch's included: predicted runs wait
until the batch's measured runs have finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gatewright.bench.config import Run
from gatewright.bench.data import load_array
from gatewright.bench.metrics import BenchMetrics
from gatewright.bench.predictor import Predictor, PredictorError
from gatewright.control.db import BenchRunRow, LogLine, now, update
from gatewright.control.jobs import BENCH_SUBJECT, BuildRequest, JobFailed, JobQueue, LocalExecutor, Logs
from gatewright.errors import GatewrightError
from gatewright.store import fetch, scheme_of

PROGRESS = re.compile(r"@progress queries=(\d+)")
FINAL_STATES = ("succeeded", "failed")
PREDICTED_FIELDS = ("luts", "ffs", "dsps", "fmax_mhz", "latency_cycles", "hw_latency_us", "latency_us")


@dataclass(frozen=True)
class MeasureRequest:
    """A measurement job: ``gatewright bench measure`` on one run (the run's JSON goes beside the result)."""

    run: dict[str, Any]
    model: str
    bundle: str | None

    kind = "bench"

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "model": self.model, "bundle": self.bundle}

    def describe(self) -> str:
        return f"measure {self.run['target']['name']} / {self.run['optimization']['name']}"

    def argv(self, out: Path) -> list[str]:
        spec = out.parent / "run.json"
        spec.write_text(json.dumps(self.run, indent=1))
        argv = ["bench", "measure", str(spec), "--model", self.model, "--out", str(out)]
        return argv + (["--bundle", self.bundle] if self.bundle else [])


def batch_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


def subject(run: Run) -> str:
    """The log subject of a run's jobs (the jobs table's ``deployment`` column)."""
    return f"{BENCH_SUBJECT}{run.experiment}"[:63]


class BenchRunner:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        data: Path,
        builds: int = 1,
        measures: int = 1,
        echo: Callable[[str], None] = print,
        metrics: BenchMetrics | None = None,
        verbose: bool = False,
    ) -> None:
        self.sessions = sessions
        self.data = data
        self.echo = echo
        self.metrics = metrics or BenchMetrics()
        self.logs = Logs(sessions)
        self.logs.listeners.append(self._line)
        work = data / "bench-jobs"
        self.build_jobs = JobQueue(sessions, self.logs, work, LocalExecutor(), builds)
        self.measure_jobs = JobQueue(sessions, self.logs, work, LocalExecutor(), measures)
        self.verbose = verbose
        self._builds: dict[str, asyncio.Task[Path]] = {}
        self._inputs: dict[str, asyncio.Task[Path]] = {}
        self._job_runs: dict[str, tuple[str, Run]] = {}  # measure job -> its run
        self._predictors: dict[str, Predictor | PredictorError] = {}
        self._measured = asyncio.Event()  # set when the batch's measured (not predicted) runs are done
        self._done = 0
        self._total = 0

    async def run(self, runs: list[Run], batch: str | None = None) -> list[dict[str, Any]]:
        """Every run, in parallel up to the job limits; the rows as the database holds them at the end."""
        batch = batch or batch_id()
        ids = [self._create(run, batch) for run in runs]
        self._total = len(runs)
        measured = [self._one(i, r) for i, r in zip(ids, runs, strict=True) if not r.target.predict]
        predicted = [self._one(i, r) for i, r in zip(ids, runs, strict=True) if r.target.predict]

        async def measured_first() -> None:
            await asyncio.gather(*measured)
            self._measured.set()

        try:
            await asyncio.gather(measured_first(), *predicted)
        finally:
            await self.build_jobs.close()
            await self.measure_jobs.close()
            self._interrupted(ids)
        return records(self.sessions, ids=ids)

    def _interrupted(self, ids: list[str]) -> None:
        """Runs still under way when the batch stops (Ctrl-C, a signal) end as failed, saying why."""
        with self.sessions() as session:
            query = select(BenchRunRow).where(BenchRunRow.id.in_(ids), BenchRunRow.state.not_in(FINAL_STATES))
            for row in session.scalars(query):
                row.state, row.reason, row.finished = "failed", "interrupted: `gatewright bench run` stopped", now()
            session.commit()

    def _create(self, run: Run, batch: str) -> str:
        run_id = uuid.uuid4().hex[:12]
        row = BenchRunRow(
            id=run_id,
            batch=batch,
            experiment=run.experiment,
            application=run.application.name,
            target=run.target.name,
            device="emu" if run.target.predict else run.target.device,
            build_target=run.target.build or run.target.predict,
            predicted=bool(run.target.predict),
            measurement=run.measurement.name,
            scenario=None if run.target.predict else run.measurement.scenario,
            optimization=run.optimization.name,
            state="queued",
            reason="",
            metrics={},
        )
        row.config = run.to_json()
        with self.sessions() as session:
            session.add(row)
            session.commit()
        self.metrics.state(run_id, run, "queued")
        return run_id

    def _set(self, run_id: str, run: Run, **fields: Any) -> None:
        update(self.sessions, BenchRunRow, run_id, **fields)
        if "state" in fields:
            self.metrics.state(run_id, run, fields["state"])

    async def _one(self, run_id: str, run: Run) -> None:
        label = f"{run.experiment}: {run.application.name} on {run.target.name}, {run.optimization.name}, "
        label += "predicted" if run.target.predict else run.measurement.name
        try:
            model = await self._input("model", run)
            bundle = None
            if run.target.kind != "cpu":  # the CPU runs the float model: no calibration, no build
                self._set(run_id, run, state="building")
                bundle = await self._build(run_id, run, model, await self._input("calibration", run))
            if run.target.predict:
                await self._measured.wait()
            self._set(run_id, run, state="measuring")
            request = MeasureRequest(run.to_json(), str(model), None if bundle is None else str(bundle))
            job_id = self.measure_jobs.submit(subject(run), 1, request, result="result")
            self._job_runs[job_id] = (run_id, run)
            self._set(run_id, run, measure_job=job_id)
            out = await self._job(self.measure_jobs, job_id)
            metrics = json.loads((out / "result.json").read_text())
            if run.target.predict:
                metrics.update(self._predict(run, metrics))
        except Exception as exc:  # one run's failure, whatever it is, must not stop the others
            reason = str(exc) if isinstance(exc, GatewrightError | OSError) else f"{type(exc).__name__}: {exc}"
            self._set(run_id, run, state="failed", reason=reason, finished=now())
            self._finished(f"failed   {label}: {reason}")
            return
        self._set(run_id, run, state="succeeded", metrics=metrics, finished=now())
        self.metrics.result(run_id, run, metrics)
        self._finished(f"done     {label}: {summary(metrics)}")

    def _finished(self, line: str) -> None:
        self._done += 1
        self.echo(f"[{self._done}/{self._total}] {line}")

    async def _input(self, kind: str, run: Run) -> Path:
        """The application's float model as a local file (``kind`` "model") or its preprocessed calibration
        data as ``.npy`` ("calibration"): made once per application, in a thread."""
        key = kind + json.dumps(run.to_json()["application"], sort_keys=True)
        if key not in self._inputs:
            make = self._model_file if kind == "model" else self._calibration_file
            self._inputs[key] = asyncio.create_task(asyncio.to_thread(make, run))
        return await self._inputs[key]

    def _folder(self) -> Path:
        inputs = self.data / "bench-inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        return inputs

    def _model_file(self, run: Run) -> Path:
        app = run.application
        if scheme_of(str(app.model)) == "":
            return Path(app.model)
        digest = hashlib.sha256(str(app.model).encode()).hexdigest()[:16]
        return fetch(str(app.model), self._folder() / f"{app.name}-{digest}.onnx")

    def _calibration_file(self, run: Run) -> Path:
        app = run.application  # without calibration data, the configuration gives the data and its key
        source = Path(app.calibration or app.data)
        values = np.ascontiguousarray(app.preprocessing.apply(load_array(source, app.calibration_key)))
        # named by content: the same data gives the same file and so the same build cache key
        content = hashlib.sha256(values.tobytes() + str(values.shape).encode() + values.dtype.str.encode())
        calibration = self._folder() / f"{app.name}-calibration-{content.hexdigest()[:16]}.npy"
        if not calibration.exists():
            temporary = calibration.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(temporary, values)
            temporary.replace(calibration)
        return calibration

    async def _build(self, run_id: str, run: Run, model: Path, calibration: Path) -> Path:
        optimization = run.optimization
        options = optimization.hardware_options()
        bits = tuple(
            f"{kind}={value}"
            for kind, value in (
                ("weight", optimization.weight_bits),
                ("activation", optimization.activation_bits),
                ("input", optimization.input_bits),
            )
            if value is not None
        )
        request = BuildRequest(
            model=str(model),
            target=str(run.target.build or run.target.predict),
            calibration=str(calibration),
            bits=bits,
            precision=optimization.precision,
            arch=options.arch,
            reuse=options.reuse,
            clock_mhz=options.clock_mhz,
            until="quantize" if run.target.predict else None,
        )
        key = json.dumps(request.to_json(), sort_keys=True)
        if key not in self._builds:  # emu and sim on one build target share one firmware
            job_id = self.build_jobs.submit(subject(run), 1, request)
            self.echo(f"build    {run.application.name} for {request.target}, {run.optimization.name} (job {job_id})")
            self._builds[key] = asyncio.create_task(self._job(self.build_jobs, job_id))
            self._set(run_id, run, build_job=job_id)
        return await asyncio.shield(self._builds[key])

    async def _job(self, queue: JobQueue, job_id: str) -> Path:
        try:
            return await queue.result(job_id)
        except JobFailed as exc:
            raise JobFailed(f"{exc}{self._error_lines(job_id)}") from None

    def _error_lines(self, job_id: str) -> str:
        """The job's own error message (a build's 'error: ...' lines), to say why it failed."""
        with self.sessions() as session:
            lines = list(
                session.scalars(select(LogLine.text).where(LogLine.job_id == job_id).order_by(LogLine.id.desc()))
            )[:40]
        errors = [line for line in reversed(lines) if line.lstrip().startswith(("error", "Error"))]
        if not errors:
            return ""
        first = lines.index(errors[0]) if errors[0] in lines else 0
        detail = [line.strip() for line in reversed(lines[: first + 1])][:4]
        return ": " + " ".join(detail)

    def _predict(self, run: Run, metrics: dict[str, Any]) -> dict[str, Any]:
        family = str(run.target.predict).split("-")[0]
        if family not in self._predictors:
            try:
                self._predictors[family] = Predictor.learn(records(self.sessions), family)
            except PredictorError as exc:
                self._predictors[family] = exc
        predictor = self._predictors[family]
        if isinstance(predictor, PredictorError):
            raise predictor
        estimate = predictor.predict(metrics["features"])
        return {
            **{k: v for k, v in estimate.items() if k in PREDICTED_FIELDS},
            "latency_us": estimate["hw_latency_us"],
            "predicted_fields": list(PREDICTED_FIELDS),
            "predictor": {e["quantity"]: {"method": e["method"], "cv_mape": e["cv_mape"]} for e in predictor.errors()},
        }

    def _line(self, _subject: str, text: str, job_id: str | None) -> None:
        if job_id is None:
            return
        owner = self._job_runs.get(job_id)
        match = PROGRESS.fullmatch(text.strip())
        if match and owner is not None:
            self.metrics.progress(owner[0], owner[1], int(match.group(1)))
        elif self.verbose:
            self.echo(f"  {job_id} | {text}")


def summary(metrics: dict[str, Any]) -> str:
    parts = []
    if metrics.get("accuracy") is not None:
        parts.append(f"accuracy {metrics['accuracy']:.2%}")
    if metrics.get("agreement") is not None:
        parts.append(f"agreement {metrics['agreement']:.2%}")
    if metrics.get("service_latency_at_percentile_us") is not None:
        parts.append(f"p{metrics.get('percentile') or 0:g} {metrics['service_latency_at_percentile_us']:.1f} us")
    if metrics.get("throughput"):
        parts.append(f"{metrics['throughput']:.0f} samples/s")
    if metrics.get("validity") and metrics.get("validity") != "VALID":
        parts.append(metrics["validity"])
    prefix = "predicted " if metrics.get("predicted_fields") else ""
    if metrics.get("luts") is not None:
        parts.append(f"{prefix}{metrics['luts']:.0f} LUTs")
    if metrics.get("fmax_mhz"):
        parts.append(f"{prefix}Fmax {metrics['fmax_mhz']:.1f} MHz")
    if metrics.get("hw_latency_us") is not None:
        parts.append(f"{prefix}FPGA latency {metrics['hw_latency_us']:.3f} us")
    return ", ".join(parts)


def records(
    sessions: sessionmaker[Session],
    ids: list[str] | None = None,
    experiments: list[str] | None = None,
    batch: str | None = None,
) -> list[dict[str, Any]]:
    """Bench runs from the database, oldest first, as plain dicts (the report's and predictor's input)."""
    query = select(BenchRunRow).order_by(BenchRunRow.created, BenchRunRow.id)
    if ids is not None:
        query = query.where(BenchRunRow.id.in_(ids))
    if experiments:
        query = query.where(BenchRunRow.experiment.in_(experiments))
    if batch:
        query = query.where(BenchRunRow.batch == batch)
    with sessions() as session:
        return [row.to_json() for row in session.scalars(query)]
