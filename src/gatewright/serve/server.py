"""The inference server's core, shared by the REST and gRPC front ends: which models are served on
which devices, their versions and states, the repository extension (index, load, unload), shared
memory regions, and the trace and log settings. The front ends only translate the wire formats.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import mmap
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import gatewright
from gatewright import devices
from gatewright.build.bundle import Bundle
from gatewright.devices.base import Device
from gatewright.errors import GatewrightError
from gatewright.serve.errors import NotFoundError, RequestError, UnavailableError, UnsupportedError
from gatewright.serve.models import ServedModel
from gatewright.serve.repository import MANIFEST, MODEL_FILE, ModelSource, check_name, read_source, scan

log = logging.getLogger("gatewright.serve")

EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "statistics",
    "system_shared_memory",
    "trace",
    "logging",
    "kserve_v1",
]
TRACE_DEFAULTS: dict[str, list[str]] = {
    "trace_file": [],
    "trace_level": ["OFF"],
    "trace_rate": ["1000"],
    "trace_count": ["-1"],
    "log_frequency": ["0"],
    "trace_mode": ["triton"],
}
TRACE_LEVELS = {"OFF", "TIMESTAMPS", "TENSORS"}
LOG_SETTINGS: dict[str, type] = {
    "log_file": str,
    "log_info": bool,
    "log_warning": bool,
    "log_error": bool,
    "log_verbose_level": int,
    "log_format": str,
}


@dataclass
class VersionState:
    state: str  # READY, LOADING, UNAVAILABLE
    reason: str = ""


@dataclass
class ShmRegion:
    name: str
    key: str
    offset: int
    byte_size: int
    buffer: mmap.mmap

    def view(self, offset: int, size: int, what: str) -> memoryview:
        if offset < 0 or size < 0 or offset + size > self.byte_size:
            raise RequestError(
                f"{what}: offset {offset} and size {size} run past shared-memory region '{self.name}' "
                f"({self.byte_size} bytes)"
            )
        start = self.offset + offset
        return memoryview(self.buffer)[start : start + size]


class InferenceServer:
    def __init__(
        self,
        repository: Path | None = None,
        single: tuple[str, Path] | None = None,
        device: str | None = None,
        max_request_bytes: int = 64 << 20,
        autoload: bool = True,
    ) -> None:
        if (repository is None) == (single is None):
            raise GatewrightError("serve: give a model repository or one model folder")
        folder = repository if repository is not None else single[1]  # type: ignore[index]
        if not folder.is_dir():
            raise GatewrightError(
                f"serve: {folder} is not a folder; a model repository holds one folder per model (DIR/<model>/)"
            )
        self.repository = repository
        self.single = single
        self.default_device = device
        self.max_request_bytes = max_request_bytes
        self.models: dict[str, dict[int, ServedModel]] = {}
        self.states: dict[str, dict[int, VersionState]] = {}
        self.devices: dict[str, Device] = {}
        self.shm: dict[str, ShmRegion] = {}
        self.trace: dict[str, dict[str, list[str]]] = {"": dict(TRACE_DEFAULTS)}
        self._trace_seen = 0
        self._traced = 0
        self.log_settings: dict[str, Any] = {
            "log_file": "",
            "log_info": True,
            "log_warning": True,
            "log_error": True,
            "log_verbose_level": 0,
            "log_format": "default",
        }
        self.autoload = autoload  # load the repository's models at start (a control plane loads its own)
        self.started = False  # every model the start-up asked for has been tried
        self._uploads: dict[str, Path] = {}  # models loaded from files given to the load API
        self._device_lock = threading.Lock()
        self._load_lock = asyncio.Lock()

    # -- health and metadata --------------------------------------------------------------------------
    def ready(self) -> bool:
        """Ready once start-up loading is done and every model that should run is READY (strict)."""
        if not self.started:
            return False
        return all(s.state == "READY" for versions in self.states.values() for s in versions.values())

    def metadata(self) -> dict[str, Any]:
        return {"name": "gatewright", "version": gatewright.__version__, "extensions": EXTENSIONS}

    def model(self, name: str, version: str = "") -> ServedModel:
        """The served model version; version "" is the latest ready one."""
        versions = self.models.get(name)
        if version:
            if not (version.isascii() and version.isdigit()):  # '²'.isdigit() holds, int('²') fails
                raise RequestError(f"model '{name}': version {version!r} is not a number")
            state = self.states.get(name, {}).get(int(version))
            if versions and int(version) in versions:
                return versions[int(version)]
            if state is not None:
                raise UnavailableError(f"model '{name}' version {version} is not ready: {state.state} {state.reason}")
            raise NotFoundError(
                f"model '{name}' has no version {version}" if name in self.states else self._unknown(name)
            )
        if versions:
            return versions[max(versions)]
        if name in self.states:
            reasons = "; ".join(f"{v}: {s.state} {s.reason}".strip() for v, s in sorted(self.states[name].items()))
            raise UnavailableError(f"model '{name}' is not ready ({reasons or 'unloaded'})")
        raise NotFoundError(self._unknown(name))

    def _unknown(self, name: str) -> str:
        known = ", ".join(sorted(self.states)) or "none"
        return f"unknown model '{name}' (served models: {known})"

    def versions(self, name: str) -> list[int]:
        return sorted(self.models.get(name, {}))

    # -- the repository -------------------------------------------------------------------------------
    def _folders(self) -> dict[str, Path]:
        if self.single is not None:
            return {self.single[0]: self.single[1]}
        assert self.repository is not None
        return scan(self.repository)

    async def start(self) -> None:
        """Load every model of the repository (failures are logged and shown in the index)."""
        try:
            for name in self._folders() if self.autoload else []:
                try:
                    await self.load(name)
                except GatewrightError as exc:
                    log.error("model %s: %s", name, exc)
        finally:
            self.started = True
            # The models, sessions and modules loaded so far live as long as the server: move them out
            # of the garbage collector's way, so collections triggered by requests scan only requests.
            gc.freeze()

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        entries: list[dict[str, str]] = []
        names = set(self.states)
        with contextlib.suppress(GatewrightError):
            names |= set(self._folders())
        for name in sorted(names):
            states = self.states.get(name, {})
            if not states:
                if not ready_only:
                    entries.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"})
                continue
            for version, state in sorted(states.items()):
                if ready_only and state.state != "READY":
                    continue
                entries.append({"name": name, "version": str(version), "state": state.state, "reason": state.reason})
        return entries

    async def load(self, name: str, config: str | None = None, files: dict[str, bytes] | None = None) -> None:
        """Load (or reload) a model: its selected versions, from the repository or from ``files``."""
        async with self._load_lock:
            if files:
                check_name(name)  # before the name becomes part of a folder's name
                folder = self._write_upload(name, files)
                try:
                    source = read_source(name, folder, config)
                except Exception:  # the upload holds no model: keep the model's previous source
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
                old = self._uploads.pop(name, None)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
                self._uploads[name] = folder
            else:
                source = read_source(name, self._uploads.get(name) or self._folder(name), config)
            wanted = source.selected_versions()
            await self._unload(name)
            self.states[name] = {v: VersionState("LOADING") for v in wanted}
            for version in wanted:
                try:
                    served = await asyncio.to_thread(self._load_version, source, version)
                except GatewrightError as exc:
                    self.states[name][version] = VersionState("UNAVAILABLE", str(exc))
                    continue
                self.models.setdefault(name, {})[version] = served
                self.states[name][version] = VersionState("READY")
                log.info(
                    "model %s version %d ready on %s",
                    name,
                    version,
                    served.model.device.uri if served.model.device else "?",
                )
            failed = [f"version {v}: {s.reason}" for v, s in self.states[name].items() if s.state != "READY"]
            if failed:
                # the request's own files or configuration: the client's mistake (400); the repository's: 503
                error = RequestError if files or config is not None else UnavailableError
                raise error(f"model '{name}' failed to load: {'; '.join(failed)}")

    def _folder(self, name: str) -> Path:
        folders = self._folders()
        if name not in folders:
            where = self.single[1] if self.single else self.repository
            raise NotFoundError(f"no model '{name}' in the model repository {where}")
        return folders[name]

    def _write_upload(self, name: str, files: dict[str, bytes]) -> Path:
        """The load API's "file:<path>" parameters: the model's files, written to a folder of their own."""
        folder = Path(tempfile.mkdtemp(prefix=f"gatewright-{name}-"))
        try:
            for rel, data in files.items():
                path = (folder / rel).resolve()
                if not rel or rel.startswith("/") or not path.is_relative_to(folder.resolve()):
                    raise RequestError(f"model '{name}': file parameter 'file:{rel}' must name a path inside the model")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        except (OSError, ValueError) as exc:  # a path that is a folder, or holds a NUL byte
            shutil.rmtree(folder, ignore_errors=True)
            raise RequestError(f"model '{name}': cannot write the file parameters: {exc}") from None
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder

    def _load_version(self, source: ModelSource, version: int) -> ServedModel:
        path = source.versions[version]
        configured = source.config.parameters["device"].string_value if "device" in source.config.parameters else ""
        if (path / MANIFEST).is_file():
            uri = configured or self.default_device or "emu"
            device = self._device(uri)
            model = device.load(Bundle(path))
            platform = "gatewright_bundle"
        else:
            uri = configured or "cpu"
            device = self._device(uri)
            model = device.load(path / MODEL_FILE)
            platform = "onnxruntime_onnx"
        try:
            served = ServedModel(source.name, version, model, source.config, platform)
        except GatewrightError:
            device.unload(model)
            raise
        if served.skipped_outputs:
            log.warning(
                "model %s: output(s) %s are not tensors and are not served (export the model without ZipMap)",
                source.name,
                ", ".join(served.skipped_outputs),
            )
        return served

    def _device(self, uri: str) -> Device:
        with self._device_lock:
            if uri not in self.devices:
                self.devices[uri] = devices.open(uri)
            return self.devices[uri]

    async def unload(self, name: str) -> None:
        async with self._load_lock:
            if name not in self.states:
                raise NotFoundError(self._unknown(name))
            await self._unload(name)
            self.states[name] = {}

    async def _unload(self, name: str) -> None:
        for served in self.models.pop(name, {}).values():
            served.close()
            device = served.model.device
            if device is not None:
                await asyncio.to_thread(device.unload, served.model)

    def close(self) -> None:
        for versions in self.models.values():
            for served in versions.values():
                served.close()
        self.models.clear()
        for device in self.devices.values():
            try:
                device.close()
            except GatewrightError as exc:
                log.warning("closing %s: %s", device.uri, exc)
        self.devices.clear()
        for region in self.shm.values():
            region.buffer.close()
        self.shm.clear()
        for folder in self._uploads.values():
            shutil.rmtree(folder, ignore_errors=True)

    # -- statistics -----------------------------------------------------------------------------------
    def statistics(self, name: str = "", version: str = "") -> list[dict[str, Any]]:
        if name:
            if version:
                chosen = [self.model(name, version)]
            else:
                self.model(name)  # NOT_FOUND / UNAVAILABLE as for every model call
                chosen = [self.models[name][v] for v in sorted(self.models[name])]
        else:
            chosen = [m for versions in self.models.values() for _, m in sorted(versions.items())]
        return [_model_stats(m) for m in chosen]

    # -- system shared memory -------------------------------------------------------------------------
    def shm_register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not name:
            raise RequestError("shared memory: give the region a name")
        if name in self.shm:
            raise RequestError(f"shared memory region '{name}' is already registered; unregister it first")
        path = Path("/dev/shm") / key.lstrip("/")
        if "/" in key.lstrip("/") or not key.lstrip("/"):
            raise RequestError(f"shared memory key {key!r}: give a POSIX shared-memory name such as /{name}")
        if "\0" in key:
            raise RequestError(f"shared memory key {key!r}: a name cannot hold a NUL byte")
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise NotFoundError(f"shared memory key {key!r}: cannot open {path}: {exc.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if offset < 0 or byte_size <= 0 or offset + byte_size > size:
                raise RequestError(
                    f"shared memory region '{name}': offset {offset} + size {byte_size} exceeds the "
                    f"{size} bytes of {key}"
                )
            buffer = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.shm[name] = ShmRegion(name, key, offset, byte_size, buffer)

    def shm_unregister(self, name: str = "") -> None:
        names = [name] if name else list(self.shm)
        for region_name in names:
            region = self.shm.pop(region_name, None)
            if region is None:
                raise NotFoundError(f"no shared memory region '{region_name}' is registered")
            region.buffer.close()

    def shm_status(self, name: str = "") -> list[dict[str, Any]]:
        if name and name not in self.shm:
            raise NotFoundError(f"no shared memory region '{name}' is registered")
        regions = [self.shm[name]] if name else list(self.shm.values())
        return [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size} for r in regions]

    def shm_region(self, name: str) -> ShmRegion:
        if name not in self.shm:
            raise NotFoundError(f"no shared memory region '{name}' is registered")
        return self.shm[name]

    @staticmethod
    def cuda_shm_unsupported() -> UnsupportedError:
        return UnsupportedError("CUDA shared memory is not supported: gatewright serves FPGAs and CPUs, no GPU")

    # -- trace and log settings -----------------------------------------------------------------------
    def trace_settings(self, model: str = "", update: dict[str, list[str] | None] | None = None) -> dict[str, Any]:
        if model:
            self.model(model)
        if update:
            for key, value in update.items():
                if key not in TRACE_DEFAULTS:
                    raise RequestError(f"trace setting {key!r} is unknown; known: {', '.join(TRACE_DEFAULTS)}")
                if value is not None:
                    _check_trace(key, value)
            settings = self.trace.setdefault(model, {})
            for key, value in update.items():
                if value is None:  # cleared: a model falls back to the global setting
                    settings.pop(key, None)
                    if not model:
                        settings[key] = list(TRACE_DEFAULTS[key])
                else:
                    settings[key] = value
            if model and not settings:  # nothing of its own left: the model follows the global settings
                del self.trace[model]
        return self.trace_settings_for(model)

    @property
    def tracing(self) -> bool:
        """Whether any trace setting (global or per model) asks for traces: one cheap test per request."""
        return self.trace[""]["trace_level"] != ["OFF"] or len(self.trace) > 1

    def record_trace(self, model: ServedModel, request_id: str, stamps: list[tuple[str, int]]) -> None:
        """Write a TIMESTAMPS trace of one request where the trace settings ask for it."""
        settings = self.trace_settings_for(model.name)
        if settings["trace_level"] == ["OFF"] or not settings["trace_file"]:
            return
        self._trace_seen += 1
        rate = max(1, int(settings["trace_rate"][0]))
        count = int(settings["trace_count"][0])
        if self._trace_seen % rate or (count >= 0 and self._traced >= count):
            return
        self._traced += 1
        entry = {
            "id": self._traced,
            "request_id": request_id,
            "model_name": model.name,
            "model_version": model.version,
            "timestamps": [{"name": n, "ns": ns} for n, ns in stamps],
        }
        try:
            with open(settings["trace_file"][0], "ab") as out:
                out.write(orjson.dumps(entry) + b"\n")
        except (OSError, ValueError) as exc:  # the request succeeded; a trace that cannot be written is logged
            log.warning("trace file %s: %s", settings["trace_file"][0], exc)

    def trace_settings_for(self, model: str) -> dict[str, list[str]]:
        """The global trace settings with the model's own on top."""
        if model not in self.trace or not model:
            return dict(self.trace[""])
        merged = dict(self.trace[""])
        merged.update(self.trace.get(model, {}))
        return merged

    def update_log_settings(self, update: dict[str, Any]) -> dict[str, Any]:
        for key, value in update.items():
            kind = LOG_SETTINGS.get(key)
            if kind is None:
                raise RequestError(f"log setting {key!r} is unknown; known: {', '.join(LOG_SETTINGS)}")
            if kind is bool and not isinstance(value, bool):
                raise RequestError(f"log setting {key!r} takes true or false")
            if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise RequestError(f"log setting {key!r} takes a whole number ≥ 0")
            if kind is str and not isinstance(value, str):
                raise RequestError(f"log setting {key!r} takes a string")
            if key == "log_format" and value not in ("default", "ISO8601"):
                raise RequestError("log setting 'log_format' takes 'default' or 'ISO8601'")
        settings = {**self.log_settings, **update}
        _apply_logging(settings)  # raises before anything changes where the log file cannot be opened
        self.log_settings = settings
        return dict(self.log_settings)


def _check_trace(key: str, value: list[str]) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(f"trace setting {key!r} takes a list of strings")
    if key == "trace_level" and (not value or not set(value) <= TRACE_LEVELS):
        raise RequestError(f"trace setting 'trace_level' takes {', '.join(sorted(TRACE_LEVELS))}")
    numeric = key in ("trace_rate", "trace_count", "log_frequency")
    if numeric and (len(value) != 1 or not re.fullmatch(r"-?[0-9]+", value[0])):
        raise RequestError(f"trace setting {key!r} takes one whole number")
    if key == "trace_file" and len(value) > 1:
        raise RequestError("trace setting 'trace_file' takes one path")


def _apply_logging(settings: dict[str, Any]) -> None:
    handler = None
    if settings["log_file"]:
        try:
            handler = logging.FileHandler(settings["log_file"])
        except (OSError, ValueError) as exc:
            raise RequestError(f"log setting 'log_file': cannot open {settings['log_file']!r}: {exc}") from None
    logger = logging.getLogger("gatewright")
    if settings["log_verbose_level"] > 0:
        level = logging.DEBUG
    elif settings["log_info"]:
        level = logging.INFO
    elif settings["log_warning"]:
        level = logging.WARNING
    elif settings["log_error"]:
        level = logging.ERROR
    else:
        level = logging.CRITICAL + 1
    logger.setLevel(level)
    for old in [h for h in logger.handlers if getattr(h, "_gatewright_log_file", False)]:
        logger.removeHandler(old)
        old.close()
    if handler is not None:
        handler._gatewright_log_file = True  # type: ignore[attr-defined]
        datefmt = "%Y-%m-%dT%H:%M:%SZ" if settings["log_format"] == "ISO8601" else None
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt))
        logger.addHandler(handler)


def _model_stats(m: ServedModel) -> dict[str, Any]:
    s = m.stats
    return {
        "name": m.name,
        "version": str(m.version),
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": s.success.to_json(),
            "fail": s.fail.to_json(),
            "queue": s.queue.to_json(),
            "compute_input": s.compute_input.to_json(),
            "compute_infer": s.compute_infer.to_json(),
            "compute_output": s.compute_output.to_json(),
            "cache_hit": {"count": 0, "ns": 0},
            "cache_miss": {"count": 0, "ns": 0},
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": b.compute_input.to_json(),
                "compute_infer": b.compute_infer.to_json(),
                "compute_output": b.compute_output.to_json(),
            }
            for size, b in sorted(s.batches.items())
        ],
        "memory_usage": [],
    }
