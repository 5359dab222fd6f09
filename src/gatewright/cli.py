"""`gatewright ...`: one command line over every stage.

A user's mistake (bad file, bad flag value, data that does not fit) prints one ``error:`` message and
exits with status 2; only a bug shows a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from gatewright import __version__, devices
from gatewright.bench.commands import register as register_bench_commands
from gatewright.build.bundle import Bundle
from gatewright.build.hardware import HardwareOptions
from gatewright.build.pipeline import STEPS, build
from gatewright.control.commands import register as register_control_commands
from gatewright.errors import GatewrightError, InputDataError, UnsupportedModelError
from gatewright.model import Dense, LoadedModel, ModelGraph, intake, load_model
from gatewright.quant import PrecisionConfig
from gatewright.quant.report import QuantReport, as_array
from gatewright.targets import TARGETS

app = typer.Typer(
    name="gatewright",
    help="Vendor-free ML inference on open FPGAs: ONNX in, fixed point, bit-exact emulation, served.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# A pipe gets 80 columns from rich by default, too narrow for the report tables.
_WIDTH = None if sys.stdout.isatty() else 150
out = Console(width=_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

P = ParamSpec("P")
ModelArg = Annotated[Path, typer.Argument(help="An ONNX model file.", show_default=False)]


def _print_version(value: bool) -> None:
    if value:
        out.print(f"gatewright {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """Vendor-free ML inference on open FPGAs."""


def user_errors(command: Callable[P, None]) -> Callable[P, None]:
    """A ``GatewrightError`` becomes one ``error:`` line and exit status 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except GatewrightError as exc:
            err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@user_errors
def inspect(model: ModelArg) -> None:
    """Show the model's layers, shapes, MACs and the hardware / host split."""
    try:
        graph = intake(model)
    except UnsupportedModelError:
        _print_nodes_only(load_model(model))  # show the graph, then the reason it has no hardware split
        raise
    _print_io(graph)
    nodes = Table(title="Nodes", title_justify="left")
    for column in ("#", "node", "op", "part", "output"):
        nodes.add_column(column)
    for node in graph.nodes:
        style = {"hardware": "green", "host": "cyan", "constant": "dim"}[node.part]
        nodes.add_row(str(node.position), node.name, node.op_type, f"[{style}]{node.part}[/]", ", ".join(node.outputs))
    out.print(nodes)
    layers = Table(title="Hardware layers", title_justify="left")
    for column in ("layer", "kind", "shape", "MACs"):
        layers.add_column(column)
    for layer in graph.hardware.layers:
        if isinstance(layer, Dense):
            layers.add_row(layer.name, "Dense", f"{layer.n_in} -> {layer.n_out}", f"{layer.macs:,}")
        else:
            layers.add_row(layer.name, layer.describe(), "", "")
    out.print(layers)
    hw = graph.hardware
    if hw.input_scale is not None:
        out.print(
            "Input transform: a per-feature scale and offset (folded from the nodes before the first layer) "
            "is applied in float64 before quantization"
        )
    host = ", ".join(graph.host.nodes) if graph.host.nodes else "nothing"
    out.print(
        f"Split: hardware {hw.input.name} -> {hw.output} ({hw.n_in} -> {hw.n_out}, {hw.macs:,} MACs per sample, "
        f"{len(hw.nodes)} nodes); host: {host}"
    )


@app.command("build")
@user_errors
def build_command(
    model: ModelArg,
    target: Annotated[str, typer.Option(help=f"One of: {', '.join(TARGETS)}.")] = "generic",
    until: Annotated[
        str | None, typer.Option(help=f"Last step to run: {', '.join(STEPS)} (default: all the target has).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Bundle directory (default: MODEL_NAME.TARGET.bundle).")
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Representative inputs (.npy) that set the activation formats.")
    ] = None,
    bits: Annotated[
        list[str] | None,
        typer.Option(help="Precision: 8 (weights), weight=6, activation=fixed<12,4>, fc1.weight=6. Repeatable."),
    ] = None,
    precision: Annotated[Path | None, typer.Option(help="YAML / JSON precision file (defaults and layers).")] = None,
    arch: Annotated[
        str, typer.Option(help="auto (fit the target at the lowest latency), unrolled (II=1) or folded.")
    ] = "auto",
    clock_mhz: Annotated[
        float | None, typer.Option("--clock-mhz", help="Clock constraint (default: the target's).")
    ] = None,
    reuse: Annotated[
        int | None, typer.Option(help="Reuse factor of folded layers: products per multiplier per vector.")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild even if an identical build is cached.")] = False,
) -> None:
    """Build a firmware bundle: quantize, rtl, sim, synth, pnr, bitstream."""
    config = PrecisionConfig.build(precision, bits)
    destination = out_dir or Path(f"{model.stem}.{target}.bundle")
    with err.status("building", spinner="dots") as status:  # a live line on a terminal, nothing in a pipe

        def echo(line: str) -> None:
            err.print(line, highlight=False, markup=False)
            fields = line.split(maxsplit=4)
            if len(fields) >= 4 and fields[3] == "start":
                status.update(f"{fields[2]}: {fields[4] if len(fields) > 4 else ''}", spinner="dots")

        bundle, report = build(
            model,
            destination,
            target=target,
            until=until,
            calibration=calibration,
            precision=config,
            echo=echo,
            hardware=HardwareOptions(arch, clock_mhz, reuse),
            use_cache=not no_cache,
        )
    if report is not None:
        print_report(report)
    print_results(bundle)
    out.print(f"bundle written to {bundle.path}")


def print_results(bundle: Bundle) -> None:
    """Architecture, resources, timing and latency from the manifest, when the build got that far."""
    architecture = bundle.manifest.get("architecture")
    if not architecture:
        return
    results = bundle.manifest.get("results", {})
    table = Table(title=f"Hardware ({bundle.manifest['target']})", title_justify="left")
    for column in ("stage", "layers", "arch", "multipliers", "reuse", "latency", "II"):
        table.add_column(column)
    for stage in architecture["stages"]:
        table.add_row(
            stage["stage"],
            stage["layers"],
            stage["arch"],
            str(stage["parallel"] or "all"),
            str(stage["reuse_factor"]),
            str(stage["latency_cycles"]),
            str(stage["initiation_interval"]),
        )
    out.print(table)
    parts = [f"latency {results.get('latency_cycles')} cycles", f"II {results.get('initiation_interval')}"]
    if results.get("simulation"):
        checked = ", ".join(f"{n} {label}" for label, n in results["simulation"]["vectors"].items())
        parts.append(f"bit-exact in simulation on {checked}")
    if "luts" in results:
        for kind in ("luts", "ffs", "dsps", "brams"):
            parts.append(f"{kind.upper()[:-1]} {results[kind]['used']}/{results[kind]['available']}")
        if results.get("fmax_mhz"):
            parts.append(f"Fmax {results['fmax_mhz']} MHz (clock {results['clock_mhz']:g} MHz)")
            parts.append(f"latency {results['latency_ns']} ns at Fmax")
    if architecture.get("bitstream"):
        parts.append(f"bitstream {architecture['bitstream']}")
    out.print("; ".join(parts))


@app.command()
@user_errors
def predict(
    source: Annotated[Path, typer.Argument(help="A bundle directory or an ONNX model.", show_default=False)],
    input_path: Annotated[Path, typer.Option("--input", help=".npy (one input) or .npz keyed by input name.")],
    output_path: Annotated[Path, typer.Option("--output", help=".npz keyed by output name, or .npy for one output.")],
    device: Annotated[
        str, typer.Option(help="emu, sim, cpu, noop, board:NAME?port=..., remote://HOST:PORT/DEVICE.")
    ] = "emu",
) -> None:
    """Run a model on a device and save its outputs."""
    if output_path.suffix not in (".npz", ".npy"):
        raise InputDataError(f"--output {output_path}: use a .npz file (or .npy for a single output)")
    with devices.open(device) as dev:
        model = dev.load(source)
        feeds = _read_inputs(input_path, [spec.name for spec in model.inputs])
        outputs = model.infer(feeds)
    write_outputs(output_path, outputs)
    shapes = ", ".join(f"{name} {list(as_array(value).shape)}" for name, value in outputs.items())
    out.print(f"{device}: wrote {shapes} to {output_path}")


@app.command("devices")
@user_errors
def devices_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the capabilities as JSON.")] = False,
) -> None:
    """List the devices available here (and on the agents in GATEWRIGHT_AGENTS)."""
    infos = devices.list()
    if as_json:
        print(json.dumps([info.to_json() for info in infos], indent=2))
        return
    table = Table()
    for column in ("device", "runs", "max models", "queue pairs", "description"):
        table.add_column(column)
    for info in infos:
        limit = "any" if info.max_models is None else str(info.max_models)
        table.add_row(info.uri, info.runs, limit, str(info.queue_pairs), info.description)
    out.print(table)


@app.command()
@user_errors
def agent(
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:9000",
    devices_option: Annotated[
        str, typer.Option("--devices", help="Comma-separated devices to serve, e.g. sim,emu,cpu.")
    ] = "emu",
    token_file: Annotated[
        Path | None, typer.Option(help="Bearer tokens clients must present, one per line (else GATEWRIGHT_TOKEN).")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve over TLS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    store: Annotated[
        Path | None, typer.Option(help="Where uploaded models are kept (default: the gatewright cache).")
    ] = None,
    lease_s: Annotated[
        float, typer.Option(help="Seconds a client's session lives without renewal before its models are unloaded.")
    ] = 30.0,
) -> None:
    """Serve this machine's devices to remote clients (remote://HOST:PORT/DEVICE) over gRPC."""
    import signal
    import threading

    from gatewright.agent.server import read_tokens, serve
    from gatewright.cache import cache_root

    tokens = read_tokens(token_file)
    uris = [uri.strip() for uri in devices_option.split(",") if uri.strip()]
    server, service, port = serve(
        listen, uris, tokens, store or cache_root() / "agent", tls_cert, tls_key, lease_s=lease_s
    )
    host = listen.rsplit(":", 1)[0]
    scheme = "TLS" if tls_cert else "plaintext"
    out.print(f"agent listening on {host}:{port} ({scheme}), serving {', '.join(uris)}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    out.print("agent stopping: unloading every model")
    server.stop(grace=2).wait()
    service.close()


@app.command()
@user_errors
def serve(
    model_repository: Annotated[
        Path | None,
        typer.Option(help="Triton-style model repository: DIR/<model>/[<version>/] holding a bundle or model.onnx."),
    ] = None,
    http_port: Annotated[int, typer.Option("--http-port", "--http_port", help="REST port (0: any free port).")] = 8080,
    grpc_port: Annotated[int, typer.Option("--grpc-port", "--grpc_port", help="gRPC port (0: any free port).")] = 8081,
    device: Annotated[
        str | None, typer.Option(help="Where firmware bundles run (default emu); plain ONNX models run on cpu.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    max_request_bytes: Annotated[int, typer.Option(help="Largest request body accepted (413 beyond).")] = 64 << 20,
    model_name: Annotated[
        str | None, typer.Option("--model_name", "--model-name", help="KServe: serve the one model at --model_dir.")
    ] = None,
    model_dir: Annotated[
        Path, typer.Option("--model_dir", "--model-dir", help="KServe: where the model is mounted.")
    ] = Path("/mnt/models"),
) -> None:
    """Serve models over the Open Inference Protocol v2 (REST and gRPC), KServe v1 and /metrics."""
    import logging

    from gatewright.serve.app import run
    from gatewright.serve.repository import holds_model
    from gatewright.serve.server import InferenceServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if model_repository is not None and model_name is not None:
        raise GatewrightError("serve: give --model-repository or --model_name (KServe), not both")
    if model_repository is not None:
        server = InferenceServer(repository=model_repository, device=device, max_request_bytes=max_request_bytes)
        where = f"model repository {model_repository}"
    else:
        if not model_dir.is_dir():
            raise GatewrightError(
                f"serve: {model_dir} is not a folder; give --model-repository DIR, or --model_name with --model_dir"
            )
        if model_name is None:  # KServe without a name: the mounted folder is a repository
            server = InferenceServer(repository=model_dir, device=device, max_request_bytes=max_request_bytes)
        else:
            folder = model_dir
            if not holds_model(folder) and (folder / model_name).is_dir():
                folder = folder / model_name
            server = InferenceServer(single=(model_name, folder), device=device, max_request_bytes=max_request_bytes)
        where = f"{model_dir}"

    def listening(http: int, grpc_bound: int) -> None:
        out.print(f"serving {where}: REST on http://{host}:{http}, gRPC on {host}:{grpc_bound}", highlight=False)

    run(server, host, http_port, grpc_port, listening)


@app.command()
@user_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its model, data and bundle.")] = Path(
        "demo-output"
    ),
) -> None:
    """End-to-end demo: train a digits MLP, quantize it, build and simulate its RTL, compare sim, emu and cpu."""
    from gatewright.demo import run_demo

    run_demo(workdir, out)


def print_report(report: QuantReport) -> None:
    table = Table(
        title=f"Quantization ({report.samples} samples, "
        f"{'calibrated' if report.calibrated else 'not calibrated: default formats'})",
        title_justify="left",
    )
    for column in (
        "layer",
        "input",
        "weight",
        "bias",
        "accumulator",
        "output",
        "observed range",
        "saturated",
        "max |error|",
    ):
        table.add_column(column)
    for layer in report.layers:
        observed = "-" if layer.observed is None else f"[{layer.observed[0]:.3g}, {layer.observed[1]:.3g}]"
        f = layer.formats
        table.add_row(
            layer.name,
            f["input"],
            f["weight"],
            f["bias"],
            f["accumulator"],
            f["activation"],
            observed,
            str(layer.accumulator_saturated + layer.output_saturated),
            f"{layer.max_abs_error:.3g}",
        )
    out.print(table)
    out.print(f"input {report.input_format}: {report.input_saturated} saturated values")
    if report.top1_agreement is not None:
        out.print(f"top-1 agreement with the float model: {report.top1_agreement:.2%}")
    for name, figures in report.outputs.items():
        text = ", ".join(
            f"agreement {value:.2%}" if key == "agreement" else f"{key.replace('_', ' ')} {value:.4g}"
            for key, value in figures.items()
        )
        out.print(f"output {name}: {text}")


def _print_nodes_only(loaded: LoadedModel) -> None:
    """The node list of a model that does not split (the error that follows says why)."""
    table = Table(title=f"{loaded.name}: nodes", title_justify="left")
    for column in ("#", "node", "op", "output"):
        table.add_column(column)
    for position, node in enumerate(loaded.proto.graph.node):
        table.add_row(str(position), node.name or f"#{position}", node.op_type, ", ".join(node.output))
    out.print(table)


def _print_io(graph: ModelGraph) -> None:
    out.print(
        f"[bold]{graph.name}[/] ({graph.producer or 'unknown producer'}, opset {graph.opset}, "
        f"sha256 {graph.sha256[:12]})"
    )
    for kind, specs in (("input", graph.inputs), ("output", graph.outputs)):
        for spec in specs:
            shape = (
                "" if spec.shape is None else " [" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"
            )
            out.print(f"  {kind} {spec.name}: {spec.dtype}{shape}")


def _read_inputs(path: Path, names: list[str]) -> dict[str, Any]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # an .npy
            arrays = {"": loaded}
        else:
            with loaded:  # an .npz: read every array here, inside the try
                arrays = {key: loaded[key] for key in loaded.files}
    except FileNotFoundError:
        raise InputDataError(f"--input {path}: no such file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InputDataError(f"--input {path}: not a NumPy .npy/.npz file of numbers ({exc})") from None
    if "" in arrays or (len(arrays) == 1 and len(names) == 1 and next(iter(arrays)) not in names):
        if len(names) != 1:
            raise InputDataError(f"--input {path}: the model has inputs {', '.join(names)}; give an .npz keyed by them")
        return {names[0]: next(iter(arrays.values()))}
    return arrays


def write_outputs(path: Path, outputs: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same directory, then a rename."""
    arrays = {name: as_array(value) for name, value in outputs.items()}
    if path.suffix == ".npy" and len(arrays) != 1:
        raise InputDataError(f"--output {path}: the model has outputs {', '.join(arrays)}; use an .npz file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise InputDataError(f"--output {path}: cannot write there ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if path.suffix == ".npy":
                np.save(handle, next(iter(arrays.values())))
            else:
                np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stubs misread **arrays
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


register_control_commands(app, user_errors, out, err)
register_bench_commands(app, user_errors, out, err)


def main() -> None:
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING, stream=sys.stderr)
    app()


if __name__ == "__main__":
    main()
