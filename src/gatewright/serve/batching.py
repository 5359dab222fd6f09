"""Dynamic batching: requests for one model that wait together run as one batch on its device.

A batcher owns one worker coroutine per model. When idle it runs a request at once; under load the
requests that arrived while the device was busy form the next batch, up to ``max_batch_size``
samples. With ``max_queue_delay_us`` > 0 it also waits that long for a batch to fill (Triton's
``max_queue_delay_microseconds``). Requests are merged only where their inputs agree on every
dimension but the first; outputs are split back by sample counts.

Where the device call runs: a slow device (the simulator, a board, a remote agent) runs on the
model's own thread, so the event loop keeps accepting requests meanwhile. A call that takes less
than handing it to a thread and back (about 100 µs on a busy 2-core machine, measured by
benchmarks/serve_latency.py) runs in the event loop itself; the batcher keeps a moving average of
each model's execution time to tell which is which.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INLINE_BELOW_NS = 150_000  # executions faster than this (moving average) run in the event loop

Feeds = dict[str, np.ndarray]
Outputs = dict[str, Any]


@dataclass
class Timing:
    queue_ns: int
    infer_ns: int
    batch_size: int  # samples in the execution this request was part of
    samples: int  # the request's own samples


@dataclass
class _Pending:
    feeds: Feeds
    samples: int
    arrived: int
    future: asyncio.Future[tuple[Outputs, Timing]]
    key: tuple[Any, ...] = field(default=())


class Batcher:
    def __init__(
        self,
        run: Callable[[Feeds], Outputs],
        name: str,
        max_batch_size: int,
        max_queue_delay_us: int = 0,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size  # 0: the model does not batch; requests run one by one
        self.max_queue_delay_ns = max_queue_delay_us * 1000
        self._on_batch = on_batch  # (batch size, device ns) after every execution
        self._pending: deque[_Pending] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gw-{name}")
        self._busy = False  # a batch is executing
        self._average_ns: float | None = None  # moving average of the execution time; None: not measured yet
        self._inline = False  # executions are fast (by the moving average) and no queue delay is asked for
        self.closed = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def infer(self, feeds: Feeds, samples: int) -> tuple[Outputs, Timing]:
        if self.closed:
            raise RuntimeError("batcher closed")
        if self._inline and not self._pending and not self._busy:  # idle and fast: run it here, not via the worker
            start = time.perf_counter_ns()
            outputs, infer_ns = self._execute(feeds)
            self._executed(samples, infer_ns)
            return outputs, Timing(time.perf_counter_ns() - start - infer_ns, infer_ns, samples, samples)
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._work())
        key = tuple((name, array.shape[1:], array.dtype) for name, array in feeds.items())
        item = _Pending(feeds, samples, time.perf_counter_ns(), loop.create_future(), key)
        self._pending.append(item)
        assert self._wake is not None
        self._wake.set()
        return await item.future

    async def _work(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while not self.closed:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.max_queue_delay_ns and self.max_batch_size:
                await self._fill(self._pending[0].arrived + self.max_queue_delay_ns)
            batch = self._take()
            start = time.perf_counter_ns()
            self._busy = True
            try:
                feeds = batch[0].feeds if len(batch) == 1 else _concat([p.feeds for p in batch])
                if (
                    self._average_ns is not None and self._average_ns < INLINE_BELOW_NS
                ):  # fast: here, queue delay or not
                    outputs, infer_ns = self._execute(feeds)
                else:
                    outputs, infer_ns = await loop.run_in_executor(self._executor, self._execute, feeds)
            except Exception as exc:  # the device failed this batch: each request gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            finally:
                self._busy = False
            samples = sum(p.samples for p in batch)
            self._executed(samples, infer_ns)
            parts = [outputs] if len(batch) == 1 else _split(outputs, [p.samples for p in batch])
            for p, part in zip(batch, parts, strict=True):
                if not p.future.done():  # a client that went away cancelled its future
                    p.future.set_result((part, Timing(start - p.arrived, infer_ns, samples, p.samples)))

    def _executed(self, samples: int, infer_ns: int) -> None:
        self._average_ns = infer_ns if self._average_ns is None else 0.9 * self._average_ns + 0.1 * infer_ns
        self._inline = self._average_ns < INLINE_BELOW_NS and not self.max_queue_delay_ns
        if self._on_batch:
            self._on_batch(samples, infer_ns)

    def _execute(self, feeds: Feeds) -> tuple[Outputs, int]:
        start = time.perf_counter_ns()
        outputs = self._run(feeds)
        return outputs, time.perf_counter_ns() - start

    async def _fill(self, deadline_ns: int) -> None:
        assert self._wake is not None
        while sum(p.samples for p in self._pending) < self.max_batch_size:
            left = (deadline_ns - time.perf_counter_ns()) / 1e9
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        first = self._pending.popleft()
        batch = [first]
        if not self.max_batch_size:
            return batch
        samples = first.samples
        while self._pending:
            nxt = self._pending[0]
            if nxt.key != first.key or samples + nxt.samples > self.max_batch_size:
                break
            batch.append(self._pending.popleft())
            samples += nxt.samples
        return batch

    def close(self) -> None:
        self.closed = True
        if self._worker is not None:
            self._worker.cancel()
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(RuntimeError("the model was unloaded"))
        self._pending.clear()
        self._executor.shutdown(wait=False)


def _concat(parts: list[Feeds]) -> Feeds:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _split(outputs: Outputs, sizes: list[int]) -> list[Outputs]:
    bounds = np.cumsum([0, *sizes])
    result: list[Outputs] = [{} for _ in sizes]
    for name, value in outputs.items():
        for i in range(len(sizes)):
            result[i][name] = value[bounds[i] : bounds[i + 1]]
    return result
