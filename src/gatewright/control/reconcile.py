"""The reconcile loop: make every deployment's status match its spec.

For each deployment whose spec changed (``generation`` > ``observed``) or that is not yet Ready, one
task drives it: fetch the model, build the firmware (or take it from the artifact store), store it,
choose a device, load it into the inference server, publish the endpoints. Every step logs a line
that is kept. A failure at any step sets phase Failed with the reason; applying the spec again (or a
changed one) retries. The state lives in the database, so a restarted control plane picks up each
deployment where it stands: Ready ones are loaded again from the store, unfinished ones start over
(an identical build is found in the store or the build cache, not made twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gatewright import devices
from gatewright.build.pipeline import request_key
from gatewright.control.db import DeploymentRow, JobRow, LogLine, update
from gatewright.control.inventory import Inventory, NoDeviceError
from gatewright.control.jobs import BuildRequest, JobFailed, JobQueue, Logs
from gatewright.control.spec import Deployment, parse
from gatewright.errors import GatewrightError
from gatewright.serve.server import InferenceServer
from gatewright.store import ArtifactStore, fetch

log = logging.getLogger("gatewright.control")
FINAL_PHASES = ("Ready", "Failed")
RETRY_NO_DEVICE_S = 10.0


@dataclass(frozen=True)
class Endpoints:
    """Where the inference server answers, as clients should reach it."""

    host: str
    http_port: int
    grpc_port: int

    def of(self, name: str, model_uri: str) -> dict[str, Any]:
        return {
            "rest": f"http://{self.host}:{self.http_port}/v2/models/{name}",
            "grpc": f"{self.host}:{self.grpc_port}",
            "protocol": "v2",
            "model": name,
            "model_uri": model_uri,
        }


class Controller:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        logs: Logs,
        jobs: JobQueue,
        inventory: Inventory,
        store: ArtifactStore,
        server: InferenceServer,
        data: Path,
        allowed_roots: list[Path],
    ) -> None:
        self.sessions = sessions
        self.logs = logs
        self.jobs = jobs
        self.inventory = inventory
        self.store = store
        self.server = server
        self.data = data
        self.allowed_roots = allowed_roots
        self.endpoints = Endpoints("127.0.0.1", 0, 0)
        self.repository = data / "serving"  # the inference server's model repository
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    # -- the API's side -------------------------------------------------------------------------------
    def apply(self, deployment: Deployment) -> tuple[DeploymentRow, bool]:
        """Create or update; returns the row and whether it was created. An unchanged spec changes
        nothing, except that a Failed deployment is retried."""
        spec = deployment.to_json()
        with self.sessions() as session:
            row = session.get(DeploymentRow, deployment.name)
            created = row is None
            if row is None:
                row = DeploymentRow(name=deployment.name, spec=spec, generation=1, observed=0, endpoints={})
                session.add(row)
            elif row.deleting:
                raise ConflictError(f"deployment {deployment.name} is being deleted; apply it again once it is gone")
            elif row.spec != spec or row.phase == "Failed":
                row.spec, row.generation = spec, row.generation + 1
            else:
                return row, False
            row.phase, row.reason = "Pending", "waiting for the reconcile loop"
            session.commit()
        self.logs.write(deployment.name, f"applied generation {row.generation}" + (" (created)" if created else ""))
        self._wake.set()
        return row, created

    def delete(self, name: str) -> DeploymentRow:
        with self.sessions() as session:
            row = session.get(DeploymentRow, name)
            if row is None:
                raise KeyError(name)
            row.deleting, row.phase, row.reason = True, "Deleting", "unloading"
            session.commit()
        self.logs.write(name, "delete requested")
        self._wake.set()
        return row

    def get(self, name: str) -> DeploymentRow:
        with self.sessions() as session:
            row = session.get(DeploymentRow, name)
        if row is None:
            raise KeyError(name)
        return row

    def deployments(self) -> list[DeploymentRow]:
        with self.sessions() as session:
            return list(session.scalars(select(DeploymentRow).order_by(DeploymentRow.name)))

    def finished(self, name: str) -> str | None:
        """The phase once it is final for the current generation, None while it may change."""
        try:
            row = self.get(name)
        except KeyError:
            return "gone"
        return row.phase if row.phase in FINAL_PHASES and row.observed == row.generation else None

    def placed(self) -> dict[str, list[str]]:
        """Device URI -> the deployments it runs (or is about to)."""
        placed: dict[str, list[str]] = {}
        for row in self.deployments():
            if row.device and not row.deleting and row.phase in ("Loading", "Ready"):
                placed.setdefault(row.device, []).append(row.name)
        return placed

    # -- the loop -------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Reconcile whenever something changes (and every few seconds, for deployments that wait)."""
        self.jobs.recover()
        self._restore()
        while True:
            self._wake.clear()
            for row in self.deployments():
                task = self._tasks.get(row.name)
                if task is not None and not task.done():
                    if row.deleting or task.get_name() != f"{row.name}/{row.generation}":
                        task.cancel()  # the spec changed or it is being deleted: start over
                        with contextlib.suppress(BaseException):
                            await task
                    else:
                        continue
                if row.deleting:
                    await self._remove(row)
                elif row.observed != row.generation or row.phase not in FINAL_PHASES:
                    self._tasks[row.name] = asyncio.create_task(self._drive(row), name=f"{row.name}/{row.generation}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RETRY_NO_DEVICE_S)

    def _restore(self) -> None:
        """At start: what was served before is not served yet; its endpoints are gone until it is loaded
        again (from the serving folder, or the store), so say so rather than show stale endpoints."""
        for row in self.deployments():
            if row.phase != "Failed" and not row.deleting:
                self._update(row.name, phase="Pending", reason="restoring after a restart", endpoints={})
                self.logs.write(row.name, "control plane started: restoring")

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(BaseException):
                await task
        await self.jobs.close()

    # -- one deployment -------------------------------------------------------------------------------
    def _update(self, name: str, **fields: Any) -> None:
        update(self.sessions, DeploymentRow, name, **fields)

    def _phase(self, name: str, phase: str, reason: str) -> None:
        self._update(name, phase=phase, reason=reason)
        self.logs.write(name, f"{phase}: {reason}")

    async def _drive(self, row: DeploymentRow) -> None:
        name, generation = row.name, row.generation
        try:
            deployment = parse(row.spec, f"deployment {name}")  # stored by an older version: may no longer parse
            folder = self.repository / name / str(generation)
            if not folder.is_dir():  # made whole by an earlier run of this generation (before a restart)
                await self._prepare(name, generation, deployment, folder)
            await self._load(name, generation, deployment, folder)
        except asyncio.CancelledError:
            raise
        except NoDeviceError as exc:
            # not a failure of the deployment: it waits for a device, and the loop retries it
            if self.get(name).reason != str(exc):
                self.logs.write(name, f"Pending: {exc}")
            self._update(name, phase="Pending", reason=str(exc), observed=generation, device=None)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, GatewrightError) else f"internal error: {type(exc).__name__}: {exc}"
            if not isinstance(exc, GatewrightError):
                log.exception("deployment %s", name)
            self._update(name, phase="Failed", reason=reason, observed=generation, endpoints={})
            self.logs.write(name, f"Failed: {reason}")
        else:
            served = self.server.model(name)
            metadata = served.metadata(self.server.versions(name))
            endpoints = self.endpoints.of(name, deployment.spec.model.uri)
            endpoints.update(inputs=metadata["inputs"], outputs=metadata["outputs"])  # for clients and the UI
            self._update(name, phase="Ready", reason="serving", observed=generation, endpoints=endpoints)
            self.logs.write(name, f"Ready: serving at {endpoints['rest']}")

    async def _prepare(self, name: str, generation: int, deployment: Deployment, folder: Path) -> None:
        """The model's files for this generation, in the serving repository: a bundle or a model.onnx."""
        spec = deployment.spec
        work = self.data / "work" / name / str(generation)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        self._phase(name, "Fetching", f"fetching {spec.model.uri}")
        model = await asyncio.to_thread(fetch, spec.model.uri, work / "model.onnx", self.allowed_roots)
        calibration = None
        if spec.model.calibration:
            calibration = await asyncio.to_thread(
                fetch, spec.model.calibration, work / "calibration.npy", self.allowed_roots
            )
        staging = folder.with_name(f".{folder.name}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        if spec.engine == "onnx":
            staging.mkdir(parents=True)
            shutil.copyfile(model, staging / "model.onnx")
        else:
            precision = spec.quantization.config()
            options = spec.architecture.options()
            key = await asyncio.to_thread(request_key, model, spec.target, calibration, precision, options)
            if await asyncio.to_thread(self.store.has_bundle, key):
                self.logs.write(name, f"firmware {key[:16]} is in the store {self.store.uri}: no build needed")
            else:
                self._phase(name, "Building", f"building firmware for {spec.target}")
                request = BuildRequest(
                    model=str(model),
                    target=spec.target,
                    calibration=str(calibration) if calibration else None,
                    bits=tuple(spec.quantization.bits_flags()),
                    precision=spec.quantization.precision,
                    arch=options.arch,
                    reuse=options.reuse,
                    clock_mhz=options.clock_mhz,
                )
                job_id = self.jobs.submit(name, generation, request)
                self._update(name, job_id=job_id)
                try:
                    built = await self.jobs.result(job_id)
                except asyncio.CancelledError:
                    await self.jobs.cancel(job_id, "the deployment changed or was deleted")
                    raise
                except JobFailed as exc:
                    raise GatewrightError(f"build job {job_id} failed: {exc} (see `gatewright logs {name}`)") from None
                reference = await asyncio.to_thread(self.store.put_bundle, built, key)
                self.logs.write(name, f"firmware stored as {reference}")
            await asyncio.to_thread(self.store.get_bundle, key, staging)
            self._update(name, bundle=key)
        staging.replace(folder)  # whole or not at all: a restart finds either nothing or a complete folder
        shutil.rmtree(work, ignore_errors=True)

    async def _load(self, name: str, generation: int, deployment: Deployment, folder: Path) -> None:
        spec = deployment.spec
        in_use = {uri: len(names) for uri, names in self.placed().items() if name not in names}
        device = await asyncio.to_thread(self.inventory.choose, spec, in_use)
        self._update(name, device=device.uri, phase="Loading", reason=f"loading on {device.uri}")
        self.logs.write(name, f"Loading: on device {device.uri}")
        if device.uri not in self.server.devices:  # opened with the agent's token, shared by the server
            opened = await asyncio.to_thread(devices.open, device.uri, **_token(self.inventory.token(device.agent)))
            self.server.devices.setdefault(device.uri, opened)
        config = self.repository / name / "config.pbtxt"
        config.write_text(
            f'name: "{name}"\n'
            "version_policy: { latest: { num_versions: 1 } }\n"
            f'parameters: {{ key: "device" value: {{ string_value: "{device.uri}" }} }}\n'
        )
        for old in (self.repository / name).iterdir():  # earlier generations: the new one replaces them
            if old.is_dir() and old.name.isdigit() and int(old.name) != generation:
                shutil.rmtree(old, ignore_errors=True)
        await self.server.load(name)

    async def _remove(self, row: DeploymentRow) -> None:
        name = row.name
        if row.job_id:
            with contextlib.suppress(KeyError):
                await self.jobs.cancel(row.job_id, "the deployment was deleted")
        if name in self.server.states:
            with contextlib.suppress(GatewrightError):
                await self.server.unload(name)
            self.server.states.pop(name, None)
        shutil.rmtree(self.repository / name, ignore_errors=True)
        shutil.rmtree(self.data / "work" / name, ignore_errors=True)
        with self.sessions() as session:
            for line in session.scalars(select(LogLine).where(LogLine.deployment == name)):
                session.delete(line)
            for job in session.scalars(select(JobRow).where(JobRow.deployment == name)):
                session.delete(job)
            deployment = session.get(DeploymentRow, name)
            if deployment is not None:
                session.delete(deployment)
            session.commit()
        log.info("deployment %s deleted", name)


class ConflictError(GatewrightError):
    """The request conflicts with the deployment's state (409)."""


def _token(token: str | None) -> dict[str, str]:
    return {"token": token} if token else {}
