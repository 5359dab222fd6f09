"""What serving costs per request: gatewright's Open Inference Protocol server next to a floor and two peers, over
REST and gRPC, all running the same digits model on the CPU.

Servers (all started first; an idle one costs the others nothing):
  floor       REST: a raw ASGI callable (no framework) answering every request with a fixed infer-response body,
              run by uvicorn with uvloop and httptools, one worker, no access log. gRPC: a grpc.aio server with
              only ModelInfer, returning a fixed ModelInferResponse. Neither runs a model.
  floor+model the floor's REST and gRPC servers, but decoding the request, running the model on onnxruntime (one
              intra-op thread, as gatewright's cpu device) and answering its outputs; nothing else (no routing,
              checks, batching or statistics): the least any Python server running this model spends here.
  gatewright  `gatewright serve --model-repository DIR` (Triton layout: DIR/digits/1/model.onnx), the `cpu` device.
  mlserver    Seldon MLServer 1.7.x with a custom runtime (an MLModel running the ONNX on onnxruntime), settings
              left at their defaults apart from host and ports.
  kserve      KServe's ModelServer with a kserve.Model running the ONNX on onnxruntime, defaults apart from ports.
Both peers log every request by default, and MLServer runs inference in a worker process (parallel_workers 1). Two
opt-in rows (--servers) show them without that: mlserver-lean (debug false: no access log; parallel_workers 0) and
kserve-lean (no access log, no latency log).
The peers are installed once into their own virtual environments under ~/.cache/gatewright/bench-venvs (pip;
GATEWRIGHT_BENCH_VENVS moves them). A server that fails to install or start is reported and skipped.

Model: the digits MLP 64-32-10 (scikit-learn's bundled digits / 16, skl2onnx, ZipMap off): input X [N, 64] FP32,
outputs label INT64 [N] and probabilities FP32 [N, 10]. Every request carries one different digits sample.

Clients are separate processes (serve_peers/client.py), the same code for every server:
  REST  one keep-alive HTTP/1.1 connection on a raw socket, a JSON body {"inputs": [{"name": "X", "shape": [1, 64],
        "datatype": "FP32", "data": [...]}]} posted to /v2/models/digits/infer;
  gRPC  one channel, a GRPCInferenceService stub, ModelInfer with the input in raw_input_contents.
Every response must be 200 / OK and parse; for real servers the predicted label must equal onnxruntime's in this
process (the check column counts the ones that do not). Latency is timed from sending a request to having its whole
response; parsing and checking happen outside that time.
  sequential  one client: --requests timed requests in all, split into --rounds rounds; each round gives every server
              its share in turn (after --warmup requests), the order rotating, so that a slow spell of this shared
              machine falls on all servers alike: p50 and p99 over all rounds;
  8 clients   --clients client processes, sequential requests each, for --seconds, one server at a time: requests/s in
              all, p50 and p99.

    .venv/bin/python benchmarks/serve_latency.py [--requests 2000] [--seconds 10] [--clients 8]
        [--servers floor,floor+model,gatewright,mlserver,kserve] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
PEERS = HERE / "serve_peers"
VENVS = Path(os.environ.get("GATEWRIGHT_BENCH_VENVS", Path.home() / ".cache" / "gatewright" / "bench-venvs"))
SERVERS = ("floor", "floor+model", "gatewright", "mlserver", "kserve")  # the default set
OPTIONAL = ("mlserver-lean", "kserve-lean")
# what each peer's virtual environment installs (pip), and the packages whose versions the report names
PEER_PACKAGES = {
    # uvloop 0.22 breaks MLServer 1.7.1's inference workers (SeldonIO/MLServer#2286): pinned below it, as MLflow does
    "mlserver": (
        ["mlserver>=1.7,<1.8", "uvloop<0.22", "onnxruntime", "numpy"],
        ["mlserver", "fastapi", "uvicorn", "uvloop", "grpcio"],
    ),
    "kserve": (["kserve", "onnxruntime", "numpy"], ["kserve", "fastapi", "uvicorn", "grpcio"]),
    "floor": (["uvicorn", "uvloop", "httptools"], ["uvicorn", "uvloop", "httptools"]),  # when .venv lacks them
}
MODEL = "digits"
START_TIMEOUT_S = 240.0


class Skip(Exception):
    """A server that cannot be measured: the message says why."""


# ----------------------------------------------------------------------------------------------------- servers


@dataclass
class Running:
    name: str
    http_port: int
    grpc_port: int
    log: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


LIVE: list[subprocess.Popen[bytes]] = []  # every process group this script started and has not stopped


def spawn(
    command: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start a process in a session of its own (so that stop() ends it and all its children), logging to `log`."""
    popen.setdefault("stdout", None)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=cwd, stdout=popen.pop("stdout") or out, stderr=out, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, **popen,
        )  # fmt: skip
    LIVE.append(process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process and its whole process group (its own session)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
            break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their leader
    if process in LIVE:
        LIVE.remove(process)


def stop_all() -> None:
    for process in list(LIVE):
        stop(process)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join("      " + line for line in text.strip().splitlines()[-lines:])


def has_modules(python: str, *modules: str) -> bool:
    check = f"import {', '.join(modules)}"
    return subprocess.run([python, "-c", check], capture_output=True).returncode == 0


def peer_venv(name: str, console: Any) -> tuple[Path, dict[str, str]]:
    """The peer's own virtual environment, created and installed on first use; its python and package versions."""
    packages, named = PEER_PACKAGES[name]
    venv = VENVS / name
    python = venv / "bin" / "python"
    marker = venv / "gatewright-bench.json"
    if marker.exists() and json.loads(marker.read_text()).get("packages") == packages:
        return python, json.loads(marker.read_text())["versions"]
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{name}-install.log"
    with console.status(f"installing {' '.join(packages)} into {venv} (once)"):
        steps = [[sys.executable, "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", *packages]]
        with log.open("wb") as out:
            for step in steps:
                if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                    shutil.rmtree(venv, ignore_errors=True)
                    raise Skip(f"`{' '.join(step)}` failed; the end of {log}:\n{tail(log)}")
    show = f"import importlib.metadata as m, json; print(json.dumps({{p: m.version(p) for p in {named!r}}}))"
    versions = json.loads(subprocess.run([str(python), "-c", show], capture_output=True, text=True, check=True).stdout)
    marker.write_text(json.dumps({"packages": packages, "versions": versions}))
    return python, versions


def start_floor(work: Path, versions: dict[str, str], console: Any) -> Running:
    running = Running("floor", free_port(), free_port(), work / "floor.log")
    python = sys.executable
    if has_modules(python, "uvicorn", "uvloop", "httptools"):
        import uvicorn

        versions["uvicorn"] = uvicorn.__version__
    else:  # gatewright's environment has no uvicorn (yet): use one of the bench's own
        venv_python, floor_versions = peer_venv("floor", console)
        python = str(venv_python)
        versions.update(floor_versions)
        versions["floor venv"] = str(VENVS / "floor")
    env = {"GW_BENCH_FLOOR_RESPONSE": str(work / "floor-response.json")}
    rest = [python, "-m", "uvicorn", "floor_rest:app", "--app-dir", str(PEERS), "--host", "127.0.0.1",
            "--port", str(running.http_port), "--loop", "uvloop", "--http", "httptools", "--workers", "1",
            "--no-access-log", "--log-level", "warning"]  # fmt: skip
    grpc_floor = [sys.executable, str(PEERS / "floor_grpc.py"), str(running.grpc_port)]
    running.processes = [spawn(command, running.log, env=env) for command in (rest, grpc_floor)]
    return running


def start_floor_model(work: Path, versions: dict[str, str], console: Any) -> Running:
    """The floor plus the model and nothing else (serve_peers/floor_model_rest.py, floor_grpc.py with a model)."""
    running = Running("floor+model", free_port(), free_port(), work / "floor-model.log")
    python = sys.executable
    if not has_modules(python, "uvicorn", "uvloop", "httptools", "orjson", "onnxruntime"):
        raise Skip(f"{python} lacks uvicorn, uvloop, httptools, orjson or onnxruntime (pip install -e . there)")
    model = work / "repository" / MODEL / "1" / "model.onnx"
    env = {"GW_BENCH_MODEL": str(model), "GW_BENCH_FLOOR_RESPONSE": str(work / "floor-response.json")}
    rest = [python, "-m", "uvicorn", "floor_model_rest:app", "--app-dir", str(PEERS), "--host", "127.0.0.1",
            "--port", str(running.http_port), "--loop", "uvloop", "--http", "httptools", "--workers", "1",
            "--no-access-log", "--log-level", "warning"]  # fmt: skip
    grpc_floor = [python, str(PEERS / "floor_grpc.py"), str(running.grpc_port), str(model)]
    running.processes = [spawn(command, running.log, env=env) for command in (rest, grpc_floor)]
    return running


def start_gatewright(work: Path, versions: dict[str, str], console: Any) -> Running:
    running = Running("gatewright", free_port(), free_port(), work / "gatewright.log")
    executable = Path(sys.executable).parent / "gatewright"
    if not executable.exists():
        raise Skip(f"{executable} does not exist (pip install -e . into this environment)")
    command = [str(executable), "serve", "--model-repository", str(work / "repository"),
               "--http-port", str(running.http_port), "--grpc-port", str(running.grpc_port)]  # fmt: skip
    running.processes = [spawn(command, running.log)]
    return running


def start_mlserver(work: Path, versions: dict[str, str], console: Any, lean: bool = False) -> Running:
    python, installed = peer_venv("mlserver", console)
    versions.update({f"mlserver's {k}" if k != "mlserver" else k: v for k, v in installed.items()})
    name = "mlserver-lean" if lean else "mlserver"
    running = Running(name, free_port(), free_port(), work / f"{name}.log")
    root = work / name
    model = root / MODEL
    model.mkdir(parents=True)
    shutil.copy(work / "repository" / MODEL / "1" / "model.onnx", model / "model.onnx")
    shutil.copy(PEERS / "mlserver_runtime.py", model / "mlserver_runtime.py")
    settings = {"host": "127.0.0.1", "http_port": running.http_port, "grpc_port": running.grpc_port,
                "metrics_port": free_port()} | ({"debug": False, "parallel_workers": 0} if lean else {})  # fmt: skip
    (root / "settings.json").write_text(json.dumps(settings))
    model_settings = {"name": MODEL, "implementation": "mlserver_runtime.OnnxRuntime",
                      "parameters": {"uri": "./model.onnx"}}  # fmt: skip
    (model / "model-settings.json").write_text(json.dumps(model_settings))
    running.processes = [spawn([str(python.parent / "mlserver"), "start", str(root)], running.log, cwd=root)]
    return running


def start_kserve(work: Path, versions: dict[str, str], console: Any, lean: bool = False) -> Running:
    python, installed = peer_venv("kserve", console)
    versions.update({f"kserve's {k}" if k != "kserve" else k: v for k, v in installed.items()})
    name = "kserve-lean" if lean else "kserve"
    running = Running(name, free_port(), free_port(), work / f"{name}.log")
    (work / name).mkdir()
    model = work / "repository" / MODEL / "1" / "model.onnx"
    command = [str(python), str(PEERS / "kserve_server.py"), str(model), str(running.http_port), str(running.grpc_port)]
    running.processes = [spawn([*command, *(["lean"] if lean else [])], running.log, cwd=work / name)]
    return running


STARTERS = {
    "floor": start_floor,
    "floor+model": start_floor_model,
    "gatewright": start_gatewright,
    "mlserver": start_mlserver,
    "kserve": start_kserve,
    "mlserver-lean": functools.partial(start_mlserver, lean=True),
    "kserve-lean": functools.partial(start_kserve, lean=True),
}


def http_ok(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def grpc_ok(port: int) -> bool:
    import grpc

    from gatewright.serve import inference_pb2, inference_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            return bool(stub.ServerReady(inference_pb2.ServerReadyRequest(), timeout=2).ready)
        except grpc.RpcError as error:
            return bool(error.code() == grpc.StatusCode.UNIMPLEMENTED)  # the floor has ModelInfer only


def wait_ready(running: Running) -> float:
    """Seconds until REST says ready (server and model) and gRPC answers; Skip if a process dies or time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < START_TIMEOUT_S:
        for process in running.processes:
            if process.poll() is not None:
                raise Skip(f"exited with status {process.returncode}; the end of {running.log}:\n{tail(running.log)}")
        if (
            http_ok(running.http_port, "/v2/health/ready")
            and http_ok(running.http_port, f"/v2/models/{MODEL}/ready")
            and grpc_ok(running.grpc_port)
        ):
            return time.monotonic() - start
        time.sleep(0.25)
    raise Skip(f"not ready after {START_TIMEOUT_S:.0f} s; the end of {running.log}:\n{tail(running.log)}")


# ----------------------------------------------------------------------------------------------------- measuring


HTTP_CLIENT = ["socket"]  # set from --http-client; every client process of the run uses it


def run_clients(
    work: Path, protocol: str, port: int, clients: int, *, requests: int, seconds: float, warmup: int, check: bool
) -> list[dict[str, Any]]:
    """Run `clients` client processes at once; the result of each (latencies, counts, time span)."""
    processes, results = [], []
    try:
        for k in range(clients):
            result = work / f"client-{protocol}-{clients}-{k}.json"
            result.unlink(missing_ok=True)
            results.append(result)
            spec = {"protocol": protocol, "port": port, "data": str(work / "samples.npz"), "offset": 211 * k,
                    "warmup": warmup, "requests": requests, "check_label": check, "result": str(result),
                    "http_client": HTTP_CLIENT[0]}  # fmt: skip
            command = [sys.executable, str(PEERS / "client.py"), json.dumps(spec)]
            processes.append(spawn(command, work / "clients.log", stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for process in processes:
            assert process.stdout is not None
            process.stdout.readline()  # `ready`, or nothing if the client failed (its result file says why)
        deadline = time.time() + seconds + 0.5
        for process in processes:
            assert process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(f"go {deadline}\n".encode())
                process.stdin.flush()
        for process in processes:
            process.wait(timeout=seconds + 120 + requests * 0.05)
    finally:
        for process in processes:
            stop(process)
    missing = {"fatal": "the client wrote no result (see clients.log)"}
    return [json.loads(path.read_text()) if path.exists() else missing for path in results]


def summarize(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency percentiles, requests/s and counts of client results (one client's rounds, or concurrent clients)."""
    fatal = next((part["fatal"] for part in parts if "fatal" in part), None)
    latencies = np.concatenate([np.asarray(part.get("latencies_ns", []), np.float64) for part in parts]) / 1e3
    measured = [part for part in parts if "start" in part]
    span = sum(p["end"] - p["start"] for p in measured) / len(measured) if measured else 0.0  # clients run together
    return {
        "count": len(latencies),
        "p50": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "p99": float(np.percentile(latencies, 99)) if len(latencies) else None,
        "rps": len(latencies) / span if span > 0 else None,
        "errors": sum(p.get("errors", 0) for p in parts),
        "first_error": fatal or next((p["first_error"] for p in parts if p.get("first_error")), None),
        "fatal": fatal,
        "checked": sum(p.get("checked", 0) for p in parts),
        "wrong": sum(p.get("wrong", 0) for p in parts),
    }


def digits_repository(work: Path) -> np.ndarray:
    """Train the digits MLP, write DIR/digits/1/model.onnx, the samples and onnxruntime's labels, the floor's body."""
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=400, random_state=0).fit(x[:1200], y[:1200])
    onnx_path = work / "repository" / MODEL / "1" / "model.onnx"
    onnx_path.parent.mkdir(parents=True)
    onnx_path.write_bytes(to_onnx(mlp, x[:1], options={"zipmap": False}).SerializeToString())
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"X": x})
    np.savez(work / "samples.npz", x=x, labels=labels)
    floor_body = {"model_name": MODEL, "model_version": "1", "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [int(labels[0])]},
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 10], "data": [float(p) for p in probabilities[0]]},
    ]}  # fmt: skip
    (work / "floor-response.json").write_text(json.dumps(floor_body))
    return x


def measure(args: argparse.Namespace, work: Path, servers: list[Running], console: Any) -> dict[str, Any]:
    """Every server is running (idle ones cost nothing). Sequential latency is taken in --rounds rounds, each giving
    every server its share of the requests in turn (the order rotating), so that a slow spell of this shared machine
    falls on all of them alike; then the concurrent clients, one server at a time."""
    results: dict[str, Any] = {running.name: {} for running in servers}
    for protocol in ("rest", "grpc"):
        per_round = max(1, args.requests // args.rounds)
        console.print(f"  {protocol}: {args.rounds} rounds of {per_round} sequential requests per server, interleaved")
        parts: dict[str, list[dict[str, Any]]] = {running.name: [] for running in servers}
        for round_ in range(args.rounds):
            for running in servers[round_ % len(servers) :] + servers[: round_ % len(servers)]:
                port = running.http_port if protocol == "rest" else running.grpc_port
                check = running.name != "floor"  # the floor answers a fixed label
                parts[running.name] += run_clients(work, protocol, port, 1, requests=per_round, seconds=0,
                                                   warmup=args.warmup, check=check)  # fmt: skip
        for running in servers:
            console.print(f"  {running.name} {protocol}: {args.clients} clients for {args.seconds:g} s")
            port = running.http_port if protocol == "rest" else running.grpc_port
            loaded = run_clients(work, protocol, port, args.clients, requests=0, seconds=args.seconds,
                                 warmup=max(10, args.warmup // 10), check=running.name != "floor")  # fmt: skip
            rows = {"sequential": summarize(parts[running.name]), "loaded": summarize(loaded)}
            results[running.name][protocol] = rows
            for what, part in (("sequential", rows["sequential"]), (f"{args.clients} clients", rows["loaded"])):
                if part["first_error"] or part["wrong"]:
                    counts = f"{part['errors']} errors, {part['wrong']} wrong labels of {part['checked']} checked"
                    console.print(f"    [red]{running.name} {what}: {counts}; first error: {part['first_error']}[/red]")
    return results


def report(args: argparse.Namespace, results: dict[str, Any], skipped: dict[str, str], console: Any) -> list[dict]:
    from rich.table import Table

    title = f"serving digits 64-32-10 on the CPU, batch 1: one client sequential, and {args.clients} clients"
    table = Table(title=title)
    columns = ("server", "protocol", "p50 µs", "p99 µs", "p50 / floor", f"req/s, {args.clients} clients",
               f"p50 / p99 µs, {args.clients} clients", "req/s / mlserver", "check")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("server", "protocol", "check") else "right")
    rows = []
    for protocol in ("rest", "grpc"):
        floor = results.get("floor", {}).get(protocol, {}).get("sequential", {}).get("p50")
        peer = results.get("mlserver", {}).get(protocol, {}).get("loaded", {}).get("rps")
        for server, by_protocol in results.items():
            seq, loaded = by_protocol[protocol]["sequential"], by_protocol[protocol]["loaded"]
            problems: list[str] = []
            for part in (seq, loaded):
                if part["fatal"]:
                    problems.append(f"failed: {part['fatal'][:160]}")
                elif part["errors"]:
                    problems.append(f"{part['errors']} bad responses, first: {(part['first_error'] or '')[:160]}")
                if part["wrong"]:
                    problems.append(f"{part['wrong']}/{part['checked']} WRONG labels")
            problems = list(dict.fromkeys(problems))
            ok = "fixed answer" if server == "floor" else f"ok ({seq['checked'] + loaded['checked']} labels)"
            check = "; ".join(problems) or ok
            row = {
                "server": server, "protocol": protocol, "p50_us": seq["p50"], "p99_us": seq["p99"],
                "p50_over_floor": seq["p50"] / floor if seq["p50"] and floor else None,
                "rps": loaded["rps"], "loaded_p50_us": loaded["p50"], "loaded_p99_us": loaded["p99"],
                "rps_over_mlserver": loaded["rps"] / peer if loaded["rps"] and peer else None,
                "requests": seq["count"], "loaded_requests": loaded["count"], "check": check,
            }  # fmt: skip
            rows.append(row)

            def fmt(value: float | None, spec: str) -> str:
                return "-" if value is None else format(value, spec)

            table.add_row(
                server, protocol.upper() if protocol == "rest" else "gRPC", fmt(row["p50_us"], ".0f"),
                fmt(row["p99_us"], ".0f"), fmt(row["p50_over_floor"], ".1f") + ("x" if floor and seq["p50"] else ""),
                fmt(row["rps"], ",.0f"), f"{fmt(loaded['p50'], '.0f')} / {fmt(loaded['p99'], '.0f')}",
                fmt(row["rps_over_mlserver"], ".2f") + ("x" if row["rps_over_mlserver"] else ""),
                f"[red]{check}[/red]" if problems else check,
            )  # fmt: skip
        table.add_section()
    console.print(table)
    for server, why in skipped.items():
        console.print(f"[yellow]skipped {server}:[/yellow] {why}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="timed sequential requests per row")
    parser.add_argument(
        "--warmup", type=int, default=200, help="warm-up requests per sequential round (a tenth per concurrent client)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds the sequential requests are split "
                        "into")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the concurrent measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client processes")
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help=f"a comma-separated list from {','.join(SERVERS + OPTIONAL)}"
    )
    parser.add_argument("--json", type=Path, help="also write the table's rows and the versions here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (model, settings, server logs)")
    parser.add_argument(
        "--http-client",
        choices=("socket", "stdlib"),
        default="socket",
        help="REST client: a raw keep-alive socket (the leanest) or the standard library's http.client",
    )
    args = parser.parse_args()
    HTTP_CLIENT[0] = args.http_client
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if unknown := sorted(set(servers) - set(SERVERS + OPTIONAL)):
        parser.error(f"unknown servers {unknown}; choose from {', '.join(SERVERS + OPTIONAL)}")
    for option in ("requests", "rounds", "clients"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1, not {getattr(args, option)}")
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be positive and --warmup not negative")

    import grpc
    import onnxruntime as ort
    from rich.console import Console

    console = Console(width=160)
    work = Path(tempfile.mkdtemp(prefix="gw-serve-latency-"))
    # Ctrl-C (even where a shell started this with SIGINT ignored) and SIGTERM run the finally below: no server is left
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    versions: dict[str, str] = {"python": platform.python_version(), "onnxruntime": ort.__version__,
                                "grpcio (clients)": grpc.__version__}  # fmt: skip
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    try:
        digits_repository(work)
        running_servers: list[Running] = []
        for name in servers:
            running = None
            try:
                running = STARTERS[name](work, versions, console)
                took = wait_ready(running)
                console.print(f"[bold]{name}[/bold] ready in {took:.1f} s (REST :{running.http_port}, "
                              f"gRPC :{running.grpc_port})")  # fmt: skip
                running_servers.append(running)
            except Skip as why:
                skipped[name] = str(why)
                console.print(f"[yellow]skipping {name}:[/yellow] {why}")
                for process in running.processes if running else []:
                    stop(process)
        if running_servers:
            results = measure(args, work, running_servers, console)
        rows = report(args, results, skipped, console)
        console.print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores; "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
            + f"; REST client: {'raw socket' if args.http_client == 'socket' else 'http.client'}"
            + f"; {args.requests} sequential requests in {args.rounds} interleaved rounds, {args.warmup} warm-up each; "
            f"{args.clients} clients for "
            f"{args.seconds:g} s; work folder {work}{'' if args.keep else ' (removed)'}"
        )
        if args.json:
            args.json.write_text(json.dumps({"rows": rows, "skipped": skipped, "versions": versions,
                                             "settings": vars(args) | {"json": str(args.json)}}, indent=2))  # fmt: skip
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: every server and client this run started is stopped")
        sys.exit(130)
    finally:
        stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
