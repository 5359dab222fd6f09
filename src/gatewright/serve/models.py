"""A model version as the server serves it: its device model, batcher, configuration and statistics."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gatewright.devices.base import Model
from gatewright.errors import GatewrightError, InferenceError
from gatewright.model.ir import TensorSpec
from gatewright.serve import inference_pb2 as pb
from gatewright.serve.batching import Batcher, Timing
from gatewright.serve.errors import ModelFailedError, RequestError
from gatewright.serve.tensors import datatype_of

DEFAULT_MAX_BATCH = 64  # samples per batch where the model batches and its configuration says nothing


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class Stats:
    """Triton's statistics of one model version; the metrics are read from the same numbers."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0  # samples
    execution_count: int = 0  # device executions (batches)
    last_inference_ms: int = 0
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by reason, as Triton labels them
    batches: dict[int, BatchStats] = field(default_factory=lambda: defaultdict(BatchStats))

    def executed(self, batch_size: int, infer_ns: int) -> None:
        self.execution_count += 1
        self.batches[batch_size].compute_infer.add(infer_ns)

    def succeeded(self, total_ns: int, input_ns: int, output_ns: int, samples: int, timing: Timing) -> None:
        # once per request: the additions written out (a method call per figure costs more than the figure)
        success, queue, compute_input = self.success, self.queue, self.compute_input
        compute_infer, compute_output = self.compute_infer, self.compute_output
        success.count += 1
        success.ns += total_ns
        queue.count += 1
        queue.ns += timing.queue_ns
        compute_input.count += 1
        compute_input.ns += input_ns
        compute_infer.count += 1
        compute_infer.ns += timing.infer_ns
        compute_output.count += 1
        compute_output.ns += output_ns
        self.inference_count += samples
        self.last_inference_ms = time.time_ns() // 1_000_000
        batch = self.batches[timing.batch_size]
        batch.compute_input.count += 1
        batch.compute_input.ns += input_ns
        batch.compute_output.count += 1
        batch.compute_output.ns += output_ns

    def failed(self, total_ns: int, reason: str) -> None:
        self.fail.add(total_ns)
        self.failures[reason] += 1
        self.last_inference_ms = int(time.time() * 1000)


def _batch_dim(spec: TensorSpec) -> bool:
    return bool(spec.shape) and not isinstance(spec.shape[0], int)  # type: ignore[index]


def _dims(spec: TensorSpec) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in (spec.shape or ())]


class ServedModel:
    """One version of a model, loaded on a device and ready to infer."""

    def __init__(self, name: str, version: int, model: Model, config: pb.ModelConfig, platform: str) -> None:
        self.name = name
        self.version = version
        self.model = model
        self.platform = platform
        self.inputs = {s.name: s for s in model.inputs}
        self.outputs = {s.name: s for s in model.outputs if s.shape is not None}  # tensors only
        self.skipped_outputs = [s.name for s in model.outputs if s.shape is None]
        self.output_names = tuple(self.outputs)
        # the protocol's datatype of every tensor (raises for a dtype the protocol cannot carry)
        self.datatypes = {s.name: datatype_of(s.dtype) for s in (*model.inputs, *self.outputs.values())}
        self.input_dims = {s.name: _dims(s) for s in model.inputs}
        batches = all(_batch_dim(s) for s in (*model.inputs, *self.outputs.values()))
        configured = config.max_batch_size
        if configured and not batches:
            raise RequestError(
                f"model '{name}': max_batch_size {configured} is set, but not every input and output has a "
                "variable first dimension to batch on; set max_batch_size: 0"
            )
        self.max_batch_size = configured or (DEFAULT_MAX_BATCH if batches else 0)
        delay = config.dynamic_batching.max_queue_delay_microseconds
        self.config = self._full_config(config, delay)
        self.stats = Stats()
        self.batcher = Batcher(self._run, f"{name}-{version}", self.max_batch_size, delay, self.stats.executed)

    def _full_config(self, given: pb.ModelConfig, delay: int) -> pb.ModelConfig:
        config = pb.ModelConfig()
        config.CopyFrom(given)
        config.name = self.name
        config.platform = self.platform
        config.backend = "gatewright"
        config.max_batch_size = self.max_batch_size
        skip = 1 if self.max_batch_size else 0
        del config.input[:]
        del config.output[:]
        for spec in self.inputs.values():
            config.input.add(name=spec.name, data_type=_config_type(spec), dims=_dims(spec)[skip:])
        for spec in self.outputs.values():
            config.output.add(name=spec.name, data_type=_config_type(spec), dims=_dims(spec)[skip:])
        if self.max_batch_size:
            config.dynamic_batching.max_queue_delay_microseconds = delay
        if not config.instance_group:
            config.instance_group.add(name=self.name, count=1, kind=pb.ModelInstanceGroup.KIND_MODEL)
        device = self.model.device.uri if self.model.device else ""
        config.parameters["device"].string_value = device
        return config

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        return self.model.infer(feeds, validated=True)  # check_request matched names, shapes and dtypes

    def metadata(self, versions: list[int]) -> dict[str, Any]:
        def tensor(spec: TensorSpec) -> dict[str, Any]:
            return {"name": spec.name, "datatype": datatype_of(spec.dtype), "shape": _dims(spec)}

        return {
            "name": self.name,
            "versions": [str(v) for v in versions],
            "platform": self.platform,
            "inputs": [tensor(s) for s in self.inputs.values()],
            "outputs": [tensor(s) for s in self.outputs.values()],
        }

    def check_request(self, inputs: dict[str, tuple[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], int]:
        """The request's tensors as the model's feeds, and its batch size."""
        if inputs.keys() != self.inputs.keys():
            unknown = sorted(set(inputs) - set(self.inputs))
            missing = sorted(set(self.inputs) - set(inputs))
            parts = [f"missing input(s) {', '.join(missing)}"] if missing else []
            parts += [f"unknown input(s) {', '.join(unknown)}"] if unknown else []
            raise RequestError(
                f"model '{self.name}': {'; '.join(parts)}; the model's inputs are {', '.join(self.inputs)}"
            )
        feeds: dict[str, np.ndarray] = {}
        batch = 1
        for name, (datatype, array) in inputs.items():
            want = self.datatypes[name]
            if datatype != want:
                raise RequestError(f"model '{self.name}': input '{name}' is {datatype}; the model expects {want}")
            dims = self.input_dims[name]
            if len(dims) != array.ndim or any(d != n and d != -1 for d, n in zip(dims, array.shape)):  # noqa: B905
                raise RequestError(
                    f"model '{self.name}': input '{name}' has shape {list(array.shape)}; the model expects {dims} "
                    "(-1: any size)"
                )
            if self.max_batch_size:
                batch = array.shape[0]
                if batch > self.max_batch_size:
                    raise RequestError(
                        f"model '{self.name}': input '{name}' holds a batch of {batch}; the maximum is "
                        f"{self.max_batch_size} (max_batch_size)"
                    )
            if datatype == "BYTES":
                array = np.array([v.decode("utf-8", "replace") for v in array.ravel()], dtype=object).reshape(
                    array.shape
                )
            feeds[name] = array
        if self.max_batch_size and len(feeds) > 1 and len({a.shape[0] for a in feeds.values()}) > 1:
            raise RequestError(f"model '{self.name}': the inputs disagree on the batch size")
        if self.max_batch_size and batch == 0:
            raise RequestError(f"model '{self.name}': the request holds no samples (batch size 0)")
        return feeds, batch

    async def infer(self, feeds: dict[str, np.ndarray], samples: int) -> tuple[dict[str, Any], Timing]:
        try:
            return await self.batcher.infer(feeds, samples)
        except InferenceError as exc:
            raise ModelFailedError(str(exc), exc.status) from None
        except GatewrightError as exc:  # the device refused the values (InputDataError and the like)
            raise RequestError(str(exc)) from None

    def close(self) -> None:
        self.batcher.close()


def _config_type(spec: TensorSpec) -> int:
    datatype = datatype_of(spec.dtype)
    return pb.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")
