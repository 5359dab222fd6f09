"""The device API every backend implements: a device loads models; a model runs inferences.

Modelled on DPDK mldev and vAccel, in Python. A backend is small: subclass ``Device`` (``info`` and
``_load``) and ``Model`` (``_infer``), and register the device class under the entry-point group
``gatewright.devices``. Everything else lives here, once: input checking, counters (``stats``,
``xstats``), asynchronous submission and queue pairs, quantize / dequantize with the model's
fixed-point formats, the self-test on the bundle's golden vectors, and the context-manager protocol.

Threads: ``infer`` may be called from several threads at once. A model whose backend cannot run two
calls at the same time (a simulator behind one pipe, a serial line) leaves ``concurrent`` False and
the calls are serialized by the model's lock.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from gatewright.build.bundle import Bundle
from gatewright.errors import DeviceError, GatewrightError, InferenceError, InputDataError
from gatewright.model.ir import TensorSpec
from gatewright.model.runtime import check_inputs
from gatewright.quant.fixed import FixedFormat
from gatewright.quant.report import as_array

QUEUE_PAIRS = 8  # queue pairs a device offers (created when first used)
QUEUE_DEPTH = 1024  # operations a queue pair holds before enqueue_burst accepts fewer
LATENCY_WINDOW = 4096  # latencies kept per model for the percentiles


@dataclass(frozen=True)
class DeviceInfo:
    """What a device is and can do."""

    uri: str
    kind: str
    description: str
    max_models: int | None  # None: no fixed limit
    max_batch: int | None
    dtypes: tuple[str, ...]
    runs: str  # "bundle", "onnx" or "bundle+onnx": what ``load`` accepts
    queue_pairs: int = QUEUE_PAIRS
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "kind": self.kind,
            "description": self.description,
            "max_models": self.max_models,
            "max_batch": self.max_batch,
            "dtypes": list(self.dtypes),
            "runs": self.runs,
            "queue_pairs": self.queue_pairs,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceInfo:
        return cls(
            uri=str(data["uri"]),
            kind=str(data["kind"]),
            description=str(data["description"]),
            max_models=data["max_models"],
            max_batch=data["max_batch"],
            dtypes=tuple(data["dtypes"]),
            runs=str(data["runs"]),
            queue_pairs=int(data["queue_pairs"]),
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True)
class TensorInfo:
    """An input or output of a loaded model. ``format`` is the fixed-point format the device uses for
    this tensor (scale ``2**-frac``, zero point 0), None where the tensor is a float or host value."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...] | None
    format: FixedFormat | None = None

    @property
    def scale(self) -> float | None:
        return None if self.format is None else self.format.lsb

    @property
    def zero_point(self) -> int | None:
        return None if self.format is None else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
            "format": None if self.format is None else str(self.format),
            "scale": self.scale,
            "zero_point": self.zero_point,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorInfo:
        shape = data.get("shape")
        fmt = data.get("format")
        return cls(
            name=str(data["name"]),
            dtype=str(data["dtype"]),
            shape=None if shape is None else tuple(shape),
            format=None if fmt is None else FixedFormat.parse(str(fmt)),
        )


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model: its handle on the device, its tensors, and what it runs (bundle or ONNX)."""

    id: str
    name: str
    device: str
    source: str  # "bundle" or "onnx"
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "device": self.device,
            "source": self.source,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInfo:
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            device=str(data["device"]),
            source=str(data["source"]),
            inputs=tuple(TensorInfo.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorInfo.from_json(t) for t in data["outputs"]),
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True)
class SelftestResult:
    """The bundle's golden vectors run on the device: every output compared exactly."""

    model: str
    vectors: int
    passed: bool
    mismatches: dict[str, int]  # output name -> samples that differ

    def __str__(self) -> str:
        if self.passed:
            return f"{self.model}: self-test passed, {self.vectors} golden vectors bit-exact"
        diff = ", ".join(f"{name}: {n} of {self.vectors}" for name, n in self.mismatches.items() if n)
        return f"{self.model}: self-test FAILED, outputs differ from the golden vectors ({diff})"


class Counters:
    """Inference counts and latencies of one model (or a whole device). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.count = 0
            self.errors = 0
            self.samples = 0
            self.total_s = 0.0
            self.min_s = math.inf
            self.max_s = 0.0
            self.window: deque[float] = deque(maxlen=LATENCY_WINDOW)
            self.cycles_total = 0
            self.cycles_last: int | None = None

    def record(self, seconds: float, samples: int, cycles: int | None = None) -> None:
        with self._lock:
            self.count += 1
            self.samples += samples
            self.total_s += seconds
            if seconds < self.min_s:
                self.min_s = seconds
            if seconds > self.max_s:
                self.max_s = seconds
            self.window.append(seconds)
            if cycles is not None:
                self.cycles_last = cycles
                self.cycles_total += cycles

    def failed(self) -> None:
        with self._lock:
            self.errors += 1

    def snapshot(self, prefix: str) -> dict[str, float]:
        """Named counters: count, errors, samples, latency min / mean / p50 / p99 / max in µs, cycles."""
        with self._lock:
            window = np.fromiter(self.window, dtype=np.float64)
            values: dict[str, float] = {
                "count": self.count,
                "errors": self.errors,
                "samples": self.samples,
                "latency_us_min": self.min_s * 1e6 if self.count else 0.0,
                "latency_us_mean": self.total_s / self.count * 1e6 if self.count else 0.0,
                "latency_us_p50": float(np.percentile(window, 50)) * 1e6 if len(window) else 0.0,
                "latency_us_p99": float(np.percentile(window, 99)) * 1e6 if len(window) else 0.0,
                "latency_us_max": self.max_s * 1e6,
            }
            if self.cycles_last is not None:
                values["cycles_last"] = self.cycles_last
                values["cycles_total"] = self.cycles_total
        return {f"{prefix}.{name}": value for name, value in values.items()}


class Model(ABC):
    """A model loaded on a device. ``infer`` takes and returns arrays keyed by the ONNX names."""

    concurrent: ClassVar[bool] = False  # True where the backend runs several calls at once safely

    def __init__(self, name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        self.name = name
        self.id = name  # unique on its device; set by Device.load
        self.inputs = inputs
        self.outputs = outputs
        self.device: Device | None = None
        self.counters = Counters()
        self.last_cycles: int | None = None  # device cycles of the last call, where the backend knows them
        self._lock = threading.Lock()

    # -- what subclasses provide --------------------------------------------------------------------------
    @abstractmethod
    def _infer(self, feeds: dict[str, Any]) -> dict[str, Any]: ...

    def formats(self) -> dict[str, FixedFormat]:
        """Fixed-point formats of the tensors the device computes in fixed point (none for float models)."""
        return {}

    def _quantize_input(self, name: str, values: np.ndarray) -> np.ndarray:
        return self.formats()[name].quantize(values)

    @property
    def source_kind(self) -> str:
        return "onnx"

    def _golden(self) -> dict[str, np.ndarray] | None:
        return None

    # -- the API ------------------------------------------------------------------------------------------
    def info(self) -> ModelInfo:
        formats = self.formats()

        def tensors(specs: tuple[TensorSpec, ...]) -> tuple[TensorInfo, ...]:
            return tuple(TensorInfo(s.name, s.dtype, s.shape, formats.get(s.name)) for s in specs)

        return ModelInfo(
            id=self.id,
            name=self.name,
            device=self.device.uri if self.device else "",
            source=self.source_kind,
            inputs=tensors(self.inputs),
            outputs=tensors(self.outputs),
        )

    def infer(self, inputs: Mapping[str, Any], validated: bool = False) -> dict[str, Any]:
        """Run one batch; outputs keyed and ordered as the model declares them. A failure raises
        ``InputDataError`` (the request was wrong) or ``InferenceError`` (the device failed it).
        ``validated``: the caller has already matched every input to its declared name, shape and
        dtype (the inference server does, per request), so the check is not repeated."""
        device_counters = self.device.counters if self.device else None
        if device_counters:
            device_counters.enqueued()
        try:
            if validated:
                feeds = inputs if isinstance(inputs, dict) else dict(inputs)
            else:
                feeds = check_inputs(self.inputs, inputs, where=self.name)
            start = time.perf_counter()
            if self.concurrent:
                outputs = self._infer(feeds)
                cycles = None
            else:
                with self._lock:
                    outputs = self._infer(feeds)
                    cycles = self.last_cycles
            elapsed = time.perf_counter() - start
        except GatewrightError as exc:
            self.counters.failed()
            if device_counters:
                device_counters.failed()
            if isinstance(exc, InferenceError):
                where = self.device.uri if self.device else "?"
                raise InferenceError(f"{self.id} on {where}: inference failed: {exc}", exc.status) from None
            raise
        except Exception as exc:  # a backend fault fails this request, not the device
            self.counters.failed()
            if device_counters:
                device_counters.failed()
            raise InferenceError(
                f"{self.id} on {self.device.uri if self.device else '?'}: inference failed "
                f"({type(exc).__name__}: {exc})",
                status="internal",
            ) from exc
        samples = batch_size(feeds)
        self.counters.record(elapsed, samples, cycles)
        if device_counters:
            device_counters.dequeued(elapsed, samples)
        return outputs

    def submit(self, inputs: Mapping[str, Any], queue_pair: int = 0) -> Future[dict[str, Any]]:
        """Queue one batch on a queue pair of the device; the future holds the outputs or the error."""
        if self.device is None:
            raise DeviceError(f"{self.id}: the model is not loaded on a device")
        return self.device.queue_pair(queue_pair).submit(self, inputs)

    def quantize(self, name: str, values: Any) -> np.ndarray:
        """Real values of tensor ``name`` to the raw integers the device computes with (int64)."""
        self._format(name)
        return np.asarray(self._quantize_input(name, np.asarray(values)), dtype=np.int64)

    def dequantize(self, name: str, raw: Any) -> np.ndarray:
        """Raw integers of tensor ``name`` to their exact real values (float64)."""
        return self._format(name).dequantize(np.asarray(raw))

    def _format(self, name: str) -> FixedFormat:
        formats = self.formats()
        if name not in formats:
            names = {s.name for s in (*self.inputs, *self.outputs)}
            if name not in names:
                raise InputDataError(f"{self.id}: no tensor '{name}'; the model has {', '.join(sorted(names))}")
            fixed = ", ".join(sorted(formats)) or "none"
            raise DeviceError(
                f"{self.id}: tensor '{name}' has no fixed-point format on this device (tensors in fixed point: "
                f"{fixed}); float and host-side tensors need no quantization"
            )
        return formats[name]

    def selftest(self) -> SelftestResult:
        """Run the bundle's golden vectors and compare every output exactly."""
        golden = self._golden()
        if golden is None:
            raise DeviceError(
                f"{self.id}: no golden vectors to test against: the device runs the float model, or the "
                "model was loaded from a plain ONNX file; self-tests check bundles on emu, sim and boards"
            )
        feeds = {s.name: golden[f"input.{s.name}"] for s in self.inputs}
        got = self.infer(feeds)
        mismatches: dict[str, int] = {}
        vectors = batch_size(feeds)
        for spec in self.outputs:
            want = golden[f"output.{spec.name}"]
            have = as_array(got[spec.name])
            if have.shape != want.shape:
                mismatches[spec.name] = vectors
                continue
            differ = (have != want).reshape(vectors, -1)
            mismatches[spec.name] = int(differ.any(axis=1).sum())
        return SelftestResult(self.id, vectors, not any(mismatches.values()), mismatches)

    def update_params(self, source: str | Path | bytes) -> None:
        """Replace the weights with those of ``source`` (an ONNX model of the same structure)."""
        raise DeviceError(
            f"{self.id}: the weights are part of the {self.device.info().kind if self.device else ''} design and "
            "cannot be changed in place; rebuild the bundle (`gatewright build`) and load it again"
        )


def batch_size(feeds: Mapping[str, Any]) -> int:
    for value in feeds.values():
        shape = value.shape if type(value) is np.ndarray else np.shape(value)
        return int(shape[0]) if shape else 1
    return 0


class DeviceCounters:
    """mldev's device statistics: operations enqueued, dequeued, and failed; and device-wide latencies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency = Counters()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._enqueued = self._dequeued = self._errors = 0
        self.latency.reset()

    def enqueued(self) -> None:
        with self._lock:
            self._enqueued += 1

    def dequeued(self, seconds: float, samples: int) -> None:
        with self._lock:
            self._dequeued += 1
        self.latency.record(seconds, samples)

    def failed(self) -> None:
        with self._lock:
            self._dequeued += 1
            self._errors += 1
        self.latency.failed()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"enqueued": self._enqueued, "dequeued": self._dequeued, "errors": self._errors}


@dataclass
class Op:
    """One inference on a queue pair: filled in with ``outputs`` or with ``status`` and ``error``."""

    model: Model
    inputs: Mapping[str, Any]
    user_data: Any = None
    outputs: dict[str, Any] | None = None
    status: str = "pending"  # "ok", or an error status: "invalid_argument", "internal", "unavailable"
    error: str | None = None
    future: Future[dict[str, Any]] = field(default_factory=Future, repr=False)
    dequeue: bool = field(default=True, repr=False)  # False for submit(): the future alone reports it


class QueuePair:
    """A FIFO of operations served by one worker thread: many in flight, completed in order.

    ``enqueue_burst`` / ``dequeue_burst`` follow mldev (enqueue returns how many were accepted when the
    queue is full; dequeue returns completed operations in submission order); ``submit`` is the same
    queue with a future per operation.
    """

    def __init__(self, device: Device, index: int) -> None:
        self.device = device
        self.index = index
        self._pending: queue.Queue[Op | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._done: deque[Op] = deque()
        self._done_ready = threading.Condition()
        self._worker = threading.Thread(target=self._run, name=f"{device.uri}-qp{index}", daemon=True)
        self._worker.start()

    def submit(self, model: Model, inputs: Mapping[str, Any]) -> Future[dict[str, Any]]:
        op = Op(model, inputs, dequeue=False)
        self._pending.put(op)
        return op.future

    def enqueue_burst(self, ops: Iterable[Op]) -> int:
        accepted = 0
        for op in ops:
            try:
                self._pending.put_nowait(op)
            except queue.Full:
                break
            accepted += 1
        return accepted

    def dequeue_burst(self, max_ops: int, timeout: float | None = 0.0) -> list[Op]:
        """Up to ``max_ops`` completed operations; waits up to ``timeout`` seconds for the first
        (None: until one completes)."""
        with self._done_ready:
            if not self._done and timeout != 0.0:
                self._done_ready.wait_for(lambda: bool(self._done), timeout)
            count = min(max_ops, len(self._done))
            return [self._done.popleft() for _ in range(count)]

    def _run(self) -> None:
        while True:
            op = self._pending.get()
            if op is None:
                return
            try:
                op.outputs = op.model.infer(op.inputs)
                op.status = "ok"
                op.future.set_result(op.outputs)
            except Exception as exc:
                op.status = exc.status if isinstance(exc, InferenceError) else _status_of(exc)
                op.error = str(exc)
                op.future.set_exception(exc)
            if op.dequeue:
                with self._done_ready:
                    self._done.append(op)
                    self._done_ready.notify_all()

    def close(self) -> None:
        self._pending.put(None)
        self._worker.join(timeout=30)


def _status_of(exc: BaseException) -> str:
    if isinstance(exc, InputDataError):
        return "invalid_argument"
    if isinstance(exc, DeviceError):
        return "failed_precondition"
    return "internal"


class Device(ABC):
    """A place where models run. Use as a context manager, or call ``close``."""

    kind: ClassVar[str]

    def __init__(self, uri: str, **options: Any) -> None:
        if options:
            raise DeviceError(f"device '{uri}' takes no options ({', '.join(sorted(options))} given)")
        self.uri = uri
        self.models: list[Model] = []
        self.closed = False
        self.counters = DeviceCounters()
        self._queue_pairs: dict[int, QueuePair] = {}
        self._lock = threading.Lock()

    @classmethod
    def discover(cls) -> list[str]:
        """URIs of the devices of this kind that can be opened here (``devices.list``)."""
        return [cls.kind]

    @abstractmethod
    def info(self) -> DeviceInfo: ...

    @abstractmethod
    def _load(self, source: Bundle | Path) -> Model: ...

    def load(self, source: Bundle | str | Path) -> Model:
        """Load a firmware bundle (or its directory) or, where the device runs them, an ONNX file."""
        self._check_open()
        limit = self.info().max_models
        if not isinstance(source, Bundle):
            path = Path(source)
            if path.is_dir():
                source = Bundle(path)
            elif not path.is_file():
                raise DeviceError(f"{path}: no such bundle directory or model file")
        with self._lock:
            if limit is not None and len(self.models) >= limit:
                raise DeviceError(f"device '{self.uri}' holds {limit} model(s) already; unload one first")
        model = self._load(source if isinstance(source, Bundle) else Path(source))
        with self._lock:
            taken = {m.id for m in self.models}
            model.id = model.name
            n = 1
            while model.id in taken:
                n += 1
                model.id = f"{model.name}#{n}"
            model.device = self
            self.models.append(model)
        return model

    def unload(self, model: Model) -> None:
        with self._lock:
            if model not in self.models:
                raise DeviceError(f"{model.id} is not loaded on '{self.uri}'")
            self.models.remove(model)
        self._release(model)

    def _release(self, model: Model) -> None:  # noqa: B027 - most backends hold nothing per model
        """Free what a model holds on the backend (a simulator process, a port)."""

    def model(self, model_id: str) -> Model:
        for model in self.models:
            if model.id == model_id:
                return model
        loaded = ", ".join(m.id for m in self.models) or "none"
        raise DeviceError(f"no model '{model_id}' on '{self.uri}'; loaded: {loaded}")

    def queue_pair(self, index: int = 0) -> QueuePair:
        self._check_open()
        count = self.info().queue_pairs
        if not 0 <= index < count:
            raise DeviceError(f"queue pair {index} does not exist on '{self.uri}'; use 0 to {count - 1}")
        with self._lock:
            if index not in self._queue_pairs:
                self._queue_pairs[index] = QueuePair(self, index)
            return self._queue_pairs[index]

    def stats(self) -> dict[str, int]:
        """Operations enqueued, dequeued (completed) and failed since the last reset."""
        return self.counters.stats()

    def stats_reset(self) -> None:
        self.counters.reset()

    def xstats(self) -> dict[str, float]:
        """Named counters: ``device.*`` for the whole device and ``model.<id>.*`` per loaded model
        (count, errors, samples, latency min / mean / p50 / p99 / max in µs, cycles where known)."""
        values = self.counters.latency.snapshot("device")
        values["device.models"] = len(self.models)
        for model in list(self.models):
            values.update(model.counters.snapshot(f"model.{model.id}"))
        return values

    def xstats_reset(self) -> None:
        self.counters.reset()
        for model in list(self.models):
            model.counters.reset()

    def _check_open(self) -> None:
        if self.closed:
            raise DeviceError(f"device '{self.uri}' is closed; open it again")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for qp in self._queue_pairs.values():
            qp.close()
        self._queue_pairs.clear()
        with self._lock:
            models, self.models = self.models, []
        for model in models:
            self._release(model)

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
