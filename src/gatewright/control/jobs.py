"""Jobs: a queue with a concurrency limit, logs kept in the database and streamed live, cancel.

A job runs one ``gatewright`` command that a request describes: a firmware build (``BuildRequest``)
for a deployment or a bench run, or a bench measurement (``gatewright.bench.runner``). ``JobQueue``
owns the jobs' states and logs; an ``Executor`` runs one job wherever it likes. The
``LocalExecutor`` runs the command as a subprocess on this machine (its output is the log; cancel
kills it, and atomic writes leave nothing half-made). A distributed engine (Kubernetes Jobs, Ray,
Celery) implements the same ``Executor`` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gatewright.control.db import JobRow, LogLine, now, update
from gatewright.errors import GatewrightError

log = logging.getLogger("gatewright.control")
FINAL_JOB_STATES = ("succeeded", "failed", "cancelled")
BENCH_SUBJECT = "bench/"  # the subject prefix of bench jobs (``gatewright.bench.runner``)
CANCEL_GRACE_S = 5.0


class JobFailed(GatewrightError):
    """A build job ended without a bundle (failed or cancelled); the message says why."""


class Logs:
    """Log lines of deployments and jobs: written to the database first, then followers are woken."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._tick = asyncio.Event()
        # called with (subject, line, job id) after each line is stored: a CLI echoes, the bench counts
        self.listeners: list[Callable[[str, str, str | None], None]] = []

    def write(self, deployment: str, text: str, job_id: str | None = None) -> None:
        text = text.rstrip("\n")
        with self.sessions() as session:
            session.add(LogLine(deployment=deployment, job_id=job_id, text=text))
            session.commit()
        self._tick.set()
        self._tick = asyncio.Event()
        for listener in self.listeners:
            listener(deployment, text, job_id)

    def lines(self, deployment: str | None = None, job_id: str | None = None, after: int = 0) -> list[LogLine]:
        query = select(LogLine).where(LogLine.id > after).order_by(LogLine.id)
        if deployment is not None:
            query = query.where(LogLine.deployment == deployment)
        if job_id is not None:
            query = query.where(LogLine.job_id == job_id)
        with self.sessions() as session:
            return list(session.scalars(query))

    async def follow(
        self, finished: Callable[[], str | None], deployment: str | None = None, job_id: str | None = None
    ) -> AsyncIterator[tuple[str, str]]:
        """("line", text) for every line so far and each new one, then ("end", state) once ``finished``
        names a final state (or the subject is gone: state "gone")."""
        last = 0
        while True:
            tick = self._tick
            state = finished()  # read before the lines: a line written just before the end is not missed
            for line in self.lines(deployment, job_id, after=last):
                last = line.id
                yield "line", line.text
            if state is not None:
                yield "end", state
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), timeout=1.0)  # the timeout catches writes by other processes


@dataclass(frozen=True)
class BuildRequest:
    """What a build job builds (kept in the job's row, so a job can be rerun after a restart)."""

    model: str  # a local file: the control plane fetched it before queueing
    target: str
    calibration: str | None = None
    bits: tuple[str, ...] = ()
    precision: dict[str, Any] | None = None
    arch: str = "auto"
    reuse: int | None = None
    clock_mhz: float | None = None
    until: str | None = None  # the last step (default: all the target has)

    kind = "build"

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "bits": list(self.bits)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildRequest:
        return cls(**{**data, "bits": tuple(data.get("bits") or ())})

    def describe(self) -> str:
        return f"target {self.target}" + (f", until {self.until}" if self.until else "")

    def argv(self, out: Path) -> list[str]:
        """``gatewright build`` arguments writing the bundle to ``out`` (a precision file goes beside it)."""
        argv = ["build", self.model, "--target", self.target, "--out", str(out), "--arch", self.arch]
        if self.calibration:
            argv += ["--calibration", self.calibration]
        for flag in self.bits:
            argv += ["--bits", flag]
        if self.precision:
            precision = out.parent / "precision.json"
            precision.write_text(json.dumps(self.precision))
            argv += ["--precision", str(precision)]
        if self.reuse is not None:
            argv += ["--reuse", str(self.reuse)]
        if self.clock_mhz is not None:
            argv += ["--clock-mhz", str(self.clock_mhz)]
        if self.until is not None:
            argv += ["--until", self.until]
        return argv


class JobRequest(Protocol):
    """What a job runs: a ``gatewright`` command whose result lands in ``out`` (a bundle, a bench result)."""

    kind: str

    def to_json(self) -> dict[str, Any]: ...

    def describe(self) -> str: ...

    def argv(self, out: Path) -> list[str]: ...


class Executor(Protocol):
    """Runs one job to completion: its result lands in ``out``; each line of output goes to ``emit``."""

    async def run(self, job_id: str, request: JobRequest, out: Path, emit: Callable[[str], None]) -> None: ...

    async def cancel(self, job_id: str) -> None: ...


class LocalExecutor:
    """The job's ``gatewright`` command in a subprocess, in its own process group (cancel stops its tools too)."""

    def __init__(self) -> None:
        self._processes: dict[str, asyncio.subprocess.Process] = {}

    async def run(self, job_id: str, request: JobRequest, out: Path, emit: Callable[[str], None]) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        arguments = request.argv(out)
        emit("$ gatewright " + " ".join(arguments))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gatewright",
            *arguments,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            cwd=out.parent,
            start_new_session=True,
            env={**os.environ, "COLUMNS": "150", "PYTHONUNBUFFERED": "1"},
        )
        self._processes[job_id] = process
        try:
            assert process.stdout is not None
            async for raw in process.stdout:
                emit(raw.decode(errors="replace").rstrip())
            code = await process.wait()
        finally:
            self._processes.pop(job_id, None)
            if process.returncode is None:  # this task was cancelled: stop the job with it
                _kill_group(process, signal.SIGKILL)
        if code != 0:
            raise JobFailed(f"gatewright {arguments[0]} exited with status {code}")

    async def cancel(self, job_id: str) -> None:
        process = self._processes.get(job_id)
        if process is None or process.returncode is not None:
            return
        _kill_group(process, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), CANCEL_GRACE_S)
        except TimeoutError:
            _kill_group(process, signal.SIGKILL)


def _kill_group(process: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


class JobQueue:
    """Jobs run in submission order, at most ``concurrency`` at a time."""

    def __init__(
        self, sessions: sessionmaker[Session], logs: Logs, workdir: Path, executor: Executor, concurrency: int = 1
    ) -> None:
        self.sessions = sessions
        self.logs = logs
        self.workdir = workdir
        self.executor = executor
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, asyncio.Task[Path]] = {}

    def recover(self) -> None:
        """After a restart: the deployments' jobs that were queued or running were lost with the
        process; say so. Bench jobs are left alone: a ``bench run`` in its own process owns them."""
        query = select(JobRow).where(JobRow.state.in_(("queued", "running")))
        with self.sessions() as session:
            for job in session.scalars(query):
                if job.deployment.startswith(BENCH_SUBJECT):
                    continue
                job.state, job.reason, job.finished = "failed", "interrupted: the control plane stopped", now()
                session.commit()
                self.logs.write(job.deployment, "job interrupted: the control plane stopped; it will be rerun", job.id)

    def submit(self, deployment: str, generation: int, request: JobRequest, result: str = "bundle") -> str:
        """Queue a job for ``deployment`` (or any subject: a bench experiment); its result lands in
        ``WORKDIR/JOB/<result>``."""
        job_id = uuid.uuid4().hex[:12]
        row = JobRow(id=job_id, deployment=deployment, generation=generation, kind=request.kind)
        row.request = request.to_json()
        with self.sessions() as session:
            session.add(row)
            session.commit()
        self.logs.write(deployment, f"{request.kind} job {job_id} queued ({request.describe()})", job_id)
        self._tasks[job_id] = asyncio.create_task(self._run(job_id, deployment, request, result))
        return job_id

    async def result(self, job_id: str) -> Path:
        """Where the job's result is (the bundle it built); JobFailed when it failed or was cancelled."""
        task = self._tasks.get(job_id)
        if task is None:
            raise JobFailed(f"job {job_id} is not running in this control plane (it was interrupted)")
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._tasks.pop(job_id, None)

    async def cancel(self, job_id: str, why: str = "cancelled by a user") -> JobRow:
        job = self.get(job_id)
        if job.state in FINAL_JOB_STATES:
            return job
        self._set(job_id, state="cancelled", reason=why, finished=now())
        task = self._tasks.get(job_id)
        await self.executor.cancel(job_id)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self.logs.write(job.deployment, f"job {job_id} cancelled: {why}", job_id)
        return self.get(job_id)

    def get(self, job_id: str) -> JobRow:
        with self.sessions() as session:
            job = session.get(JobRow, job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def list(self, deployment: str | None = None) -> list[JobRow]:
        query = select(JobRow).order_by(JobRow.created.desc())
        if deployment is not None:
            query = query.where(JobRow.deployment == deployment)
        with self.sessions() as session:
            return list(session.scalars(query))

    def state(self, job_id: str) -> str | None:
        """The job's final state, or None while it may still write."""
        try:
            state = self.get(job_id).state
        except KeyError:
            return "gone"
        return state if state in FINAL_JOB_STATES else None

    async def close(self) -> None:
        for job_id, task in list(self._tasks.items()):
            if not task.done():
                await self.cancel(job_id, "the control plane is stopping")

    def _set(self, job_id: str, **fields: Any) -> None:
        update(self.sessions, JobRow, job_id, **fields)

    async def _run(self, job_id: str, deployment: str, request: JobRequest, result: str) -> Path:
        out = self.workdir / job_id / result

        def emit(line: str) -> None:
            self.logs.write(deployment, line, job_id)

        try:
            async with self._slots:
                if self.get(job_id).state != "queued":  # cancelled while it waited
                    raise JobFailed(f"job {job_id} was cancelled")
                self._set(job_id, state="running", started=now())
                emit(f"job {job_id} started")
                await self.executor.run(job_id, request, out, emit)
        except asyncio.CancelledError:
            raise JobFailed(f"cancelled ({self.get(job_id).reason or 'the control plane is stopping'})") from None
        except Exception as exc:
            reason = str(exc) if isinstance(exc, GatewrightError) else f"{type(exc).__name__}: {exc}"
            job = self.get(job_id)
            if job.state == "cancelled":  # the build stopped because it was cancelled: say that
                raise JobFailed(f"cancelled ({job.reason})") from None
            if job.state not in FINAL_JOB_STATES:
                self._set(job_id, state="failed", reason=reason, finished=now())
                emit(f"job {job_id} failed: {reason}")
            raise JobFailed(reason) from None
        self._set(job_id, state="succeeded", finished=now())
        emit(f"job {job_id} succeeded")
        return out
