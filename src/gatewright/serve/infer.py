"""One inference request, whatever its wire format: the model's feeds in, the requested outputs out
(as JSON or binary data, top-k classifications, or written into a shared-memory region)."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gatewright.serve.batching import Timing
from gatewright.serve.errors import RequestError, ServeError
from gatewright.serve.models import ServedModel
from gatewright.serve.server import InferenceServer
from gatewright.serve.tensors import DATATYPES, from_raw, to_raw


@dataclass
class ShmRef:
    region: str
    offset: int
    byte_size: int


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's default
    classification: int = 0  # > 0: the top-k classes instead of the tensor
    shm: ShmRef | None = None


@dataclass
class InferRequest:
    model: str
    version: str
    id: str = ""
    inputs: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None  # None: every output
    binary_outputs: bool = False  # the request's default for outputs (binary_data_output)


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray | None  # None where written to shared memory
    binary: bool
    shm: ShmRef | None = None

    def raw(self) -> bytes:
        assert self.array is not None
        return to_raw(self.array, self.datatype)


def shm_ref(params: dict[str, Any], what: str) -> ShmRef | None:
    region = params.get("shared_memory_region")
    if region is None:
        return None
    size = params.get("shared_memory_byte_size")
    offset = params.get("shared_memory_offset", 0)
    if not isinstance(region, str) or not isinstance(size, int) or not isinstance(offset, int):
        raise RequestError(
            f"{what}: shared_memory_region (string), shared_memory_byte_size and shared_memory_offset (integers) "
            "must be given together"
        )
    return ShmRef(region, offset, size)


def read_shm(server: InferenceServer, ref: ShmRef, name: str, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    view = server.shm_region(ref.region).view(ref.offset, ref.byte_size, f"input '{name}'")
    return from_raw(name, datatype, shape, bytes(view))


async def run(server: InferenceServer, request: InferRequest) -> tuple[ServedModel, list[OutputTensor], Any]:
    """Run the request on its model; returns the model, the outputs and the batcher's timing."""
    served = server.model(request.model, request.version)
    feeds, samples = served.check_request(request.inputs)
    wanted: Sequence[RequestedOutput]
    if request.outputs is None:
        wanted = _every_output(served.output_names)
    else:
        wanted = request.outputs
        for want in wanted:  # before the device spends time on the request
            if want.name not in served.outputs:
                raise RequestError(
                    f"model '{served.name}' has no output '{want.name}'; its outputs are {', '.join(served.outputs)}"
                )
    outputs, timing = await served.infer(feeds, samples)
    result = []
    for want in wanted:
        datatype = served.datatypes[want.name]
        array = outputs[want.name]
        if type(array) is not np.ndarray:
            array = np.asarray(array)
        declared = DATATYPES[datatype]
        if array.dtype is not declared and datatype != "BYTES" and array.dtype != declared:  # as the model says
            array = array.astype(declared)
        if want.classification:
            array, datatype = classify(array, want.classification, want.name, served.max_batch_size > 0)
        binary = request.binary_outputs if want.binary is None else want.binary
        tensor = OutputTensor(want.name, datatype, list(array.shape), array, binary)
        if want.shm is not None:
            data = tensor.raw()
            if len(data) > want.shm.byte_size:
                raise RequestError(
                    f"output '{want.name}' takes {len(data)} bytes; shared-memory output size is {want.shm.byte_size}"
                )
            target = server.shm_region(want.shm.region).view(want.shm.offset, len(data), f"output '{want.name}'")
            target[:] = data
            tensor.array = None
            tensor.shm = ShmRef(want.shm.region, want.shm.offset, len(data))
        result.append(tensor)
    return served, result, timing


@functools.lru_cache(maxsize=256)
def _every_output(names: tuple[str, ...]) -> tuple[RequestedOutput, ...]:
    """What a request that names no outputs gets: every output, with the request's defaults (made once per model)."""
    return tuple(RequestedOutput(name) for name in names)


def classify(array: np.ndarray, k: int, name: str, batched: bool) -> tuple[np.ndarray, str]:
    """Triton's classification extension: the k largest entries of each sample as "value:index"."""
    if k < 0:
        raise RequestError(f"output '{name}': classification count must be positive")
    if array.dtype.kind not in "biuf":
        raise RequestError(f"output '{name}' is not numeric and cannot be classified")
    rows = array.reshape(array.shape[0], -1) if batched and array.ndim > 1 else array.reshape(1, -1)
    k = min(k, rows.shape[1])
    # descending by value, ties in index order; negated as float64: -x wraps around for unsigned integers
    # (a UINT8 0 ranked first) and is refused for booleans
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    out = np.empty(order.shape, dtype=object)
    for r in range(rows.shape[0]):
        for c, index in enumerate(order[r]):
            out[r, c] = f"{float(rows[r, index]):f}:{int(index)}".encode()
    return (out if batched and array.ndim > 1 else out.reshape(k)), "BYTES"


def failure_reason(exc: BaseException) -> str:
    """Triton's failure reasons: REJECTED (a bad request), BACKEND (the device failed), OTHER."""
    if isinstance(exc, ServeError):
        return "BACKEND" if exc.http_status >= 500 else "REJECTED"
    return "OTHER"


def succeeded(
    server: InferenceServer,
    served: ServedModel,
    request_id: str,
    timing: Timing,
    stamps: tuple[int, int, int, int],
    front: str,
) -> None:
    """Statistics (and a trace, where asked for) of a request that succeeded; ``stamps`` are its start, the
    end of decoding, the start of encoding and its end (perf_counter_ns)."""
    start, decoded, encoding, end = stamps
    served.stats.succeeded(end - start, decoded - start, end - encoding, timing.samples, timing)
    if server.tracing:
        server.record_trace(served, request_id, [(f"{front}_RECV_START", start), (f"{front}_SEND_START", end)])


def failed(
    server: InferenceServer, served: ServedModel | None, model: str, version: str, start: int, exc: ServeError
) -> None:
    """Count a failed request against its model, where the request named one that is served."""
    if served is None:
        try:
            served = server.model(model, version)
        except ServeError:
            return
    served.stats.failed(time.perf_counter_ns() - start, failure_reason(exc))
