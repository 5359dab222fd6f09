"""What the device layer and the agent cost per call: emu, sim and cpu, locally and through the agent
on loopback, at batch 1 and 256, next to their floors measured in the same run.

Model: the digits MLP 64-32-10 (scikit-learn's bundled digits, skl2onnx, ZipMap off), built here into
a bundle through simulation (target generic). Floors:
  onnxruntime   a plain InferenceSession.run on the float model (what `cpu` wraps);
  grpc echo     a bare unary gRPC call on loopback that returns its request, a payload of the same
                size as the batch's input: no device, no protobuf tensors, no checks.
The agent runs as a separate process (`gatewright agent`), as it would on another machine; the client
makes sequential calls (one in flight). Latencies are per call; throughput is samples per second of
those sequential calls. Rows alternate in rounds so that machine noise spreads over all of them.

    .venv/bin/python benchmarks/device_overhead.py [--calls 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

from gatewright import devices
from gatewright.build.pipeline import build

TOKEN = "benchmark-token"
BATCHES = (1, 256)


def digits_model(work: Path) -> tuple[Path, Path, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=400, random_state=0).fit(x[:1200], y[:1200])
    onnx_path = work / "digits.onnx"
    onnx_path.write_bytes(to_onnx(mlp, x[:1], options={"zipmap": False}).SerializeToString())
    np.save(work / "calib.npy", x[:1200])
    build(onnx_path, work / "digits.bundle", until="sim", calibration=work / "calib.npy")
    return onnx_path, work / "digits.bundle", x


def start_agent(work: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gatewright.cli", "agent", "--listen", "127.0.0.1:0", "--devices", "emu,sim,cpu",
         "--store", str(work / "store")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "GATEWRIGHT_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r":(\d+) ", line)
    if not match:
        raise SystemExit(f"the agent did not start: {line}")
    return process, int(match.group(1))


def echo_server() -> tuple[grpc.Server, int]:
    """A bare unary echo on loopback: bytes in, the same bytes out."""
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def timed(call: Callable[[], object], calls: int) -> list[float]:
    for _ in range(max(3, calls // 20)):  # warm-up
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400, help="timed calls per row and round at batch 1")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    console = Console(width=140)
    work = Path(tempfile.mkdtemp(prefix="gw-overhead-"))
    onnx_path, bundle_dir, x = digits_model(work)
    agent, port = start_agent(work)
    echo, echo_port = echo_server()
    channel = grpc.insecure_channel(f"127.0.0.1:{echo_port}")
    echo_call = channel.unary_unary("/bench.Echo/Echo")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    opened = []
    rows: dict[tuple[str, int], Callable[[], object]] = {}
    try:
        for batch in BATCHES:
            feed = {"X": x[:batch]}
            payload = x[:batch].tobytes()
            rows[("onnxruntime (floor)", batch)] = lambda feed=feed: session.run(None, feed)  # type: ignore[misc]
            rows[("grpc echo (floor)", batch)] = lambda payload=payload: echo_call(payload, timeout=30)  # type: ignore[misc]
        for kind in ("emu", "sim", "cpu"):
            for where, uri in (("local", kind), ("agent", f"remote://127.0.0.1:{port}/{kind}")):
                device = devices.open(uri, token=TOKEN) if where == "agent" else devices.open(uri)
                opened.append(device)
                model = device.load(bundle_dir)
                for batch in BATCHES:
                    rows[(f"{kind} {where}", batch)] = lambda model=model, feed={"X": x[:batch]}: model.infer(feed)  # type: ignore[misc]
        samples: dict[tuple[str, int], list[float]] = {key: [] for key in rows}
        for _ in range(args.rounds):
            for (name, batch), call in rows.items():
                calls = args.calls if batch == 1 else max(20, args.calls // 10)
                samples[(name, batch)] += timed(call, calls)
    finally:
        for device in opened:
            device.close()
        agent.terminate()
        agent.wait(timeout=30)
        channel.close()
        echo.stop(grace=None)

    def p(name: str, batch: int, q: float) -> float:
        return float(np.percentile(samples[(name, batch)], q)) * 1e6

    table = Table(title="device overhead: digits 64-32-10, sequential calls, one client")
    for column in ("path", "batch", "p50 µs", "p99 µs", "samples/s", "p50 / floor", "floor"):
        table.add_column(column, justify="right" if column not in ("path", "floor") else "left")
    for batch in BATCHES:
        for name, _ in [key for key in rows if key[1] == batch]:
            if "floor" in name:
                floor = ""
                ratio = ""
            elif name.endswith("agent"):
                floor, ratio = "grpc echo", f"{p(name, batch, 50) / p('grpc echo (floor)', batch, 50):.1f}x"
            else:
                floor, ratio = "onnxruntime", f"{p(name, batch, 50) / p('onnxruntime (floor)', batch, 50):.1f}x"
            throughput = batch / float(np.mean(samples[(name, batch)]))
            table.add_row(name, str(batch), f"{p(name, batch, 50):.0f}", f"{p(name, batch, 99):.0f}",
                          f"{throughput:,.0f}", ratio, floor)  # fmt: skip
        table.add_section()
    console.print(table)
    extra = Table(title="what the agent adds to each backend (p50, same batch)")
    for column in ("backend", "batch", "local µs", "agent µs", "agent - local µs", "grpc echo µs"):
        extra.add_column(column, justify="right")
    for kind in ("emu", "sim", "cpu"):
        for batch in BATCHES:
            local, remote = p(f"{kind} local", batch, 50), p(f"{kind} agent", batch, 50)
            extra.add_row(kind, str(batch), f"{local:.0f}", f"{remote:.0f}", f"{remote - local:.0f}",
                          f"{p('grpc echo (floor)', batch, 50):.0f}")  # fmt: skip
    console.print(extra)
    console.print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__}, grpcio {grpc.__version__}; {args.rounds} rounds of {args.calls} calls "
        f"(batch 1) / {max(20, args.calls // 10)} calls (batch 256) per row"
    )


if __name__ == "__main__":
    main()
