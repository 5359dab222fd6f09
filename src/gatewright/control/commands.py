"""The control plane's commands: ``gatewright control`` runs it; ``apply``, ``get``, ``delete`` and
``logs`` talk to it; ``push`` and ``pull`` move bundles to and from artifact stores."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gatewright.errors import GatewrightError

UrlOption = Annotated[
    str | None, typer.Option("--control", help="Control plane URL (default GATEWRIGHT_CONTROL_URL or :7070).")
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", help="Control API token (default GATEWRIGHT_CONTROL_TOKEN).", show_default=False),
]


def register(app: typer.Typer, user_errors: Callable[[Any], Any], out: Console, err: Console) -> None:
    """Add the commands to the CLI (``user_errors`` turns a GatewrightError into one ``error:`` line)."""

    @app.command()
    @user_errors
    def control(
        data: Annotated[Path, typer.Option(help="Where the state, store, uploads and builds live.")] = Path(
            "gatewright-data"
        ),
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Control API and web UI port (0: any free port).")] = 7070,
        http_port: Annotated[int, typer.Option("--http-port", help="Inference REST port (0: any).")] = 8080,
        grpc_port: Annotated[int, typer.Option("--grpc-port", help="Inference gRPC port (0: any).")] = 8081,
        public_host: Annotated[
            str | None, typer.Option(help="Host name clients use in the published endpoints (default: --host).")
        ] = None,
        db: Annotated[
            str | None,
            typer.Option(help="Database URL: sqlite:///PATH (default DATA/gatewright.db) or postgresql+psycopg://..."),
        ] = None,
        store: Annotated[
            str | None,
            typer.Option(help="Artifact store: a folder (default DATA/store), s3://BUCKET/PREFIX, oci://HOST/REPO."),
        ] = None,
        token: TokenOption = None,
        allow_root: Annotated[
            list[Path] | None, typer.Option(help="A folder file:// model URIs may come from (repeatable).")
        ] = None,
        builds: Annotated[int, typer.Option(help="Build jobs that run at once.")] = 1,
    ) -> None:
        """Run the control plane: API and web UI, reconcile loop, build jobs, and the inference server."""
        import logging

        from gatewright.control.app import ControlConfig, run

        if builds < 1:
            raise GatewrightError(f"--builds {builds}: at least one build must be able to run")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        config = ControlConfig(
            data=data,
            host=host,
            port=port,
            http_port=http_port,
            grpc_port=grpc_port,
            public_host=public_host,
            db=db,
            store=store,
            token=token,
            allowed_roots=[p.resolve() for p in allow_root or []],
            build_concurrency=builds,
        )
        run(config, lambda line: out.print(line, highlight=False, markup=False, soft_wrap=True))

    @app.command()
    @user_errors
    def apply(
        file: Annotated[Path, typer.Option("-f", "--file", help="Deployment spec (YAML or JSON); - for stdin.")],
        wait: Annotated[bool, typer.Option(help="Follow the log until the deployment is Ready or Failed.")] = False,
        output: Annotated[str, typer.Option("-o", "--output", help="table or json.")] = "table",
        control: UrlOption = None,
        token: TokenOption = None,
    ) -> None:
        """Create or update a deployment from its spec."""
        from gatewright.control.client import ControlClient

        _check_output(output)  # before anything is applied
        text = typer.get_text_stream("stdin").read() if str(file) == "-" else _read(file)
        with ControlClient(control, token) as client:
            status, created = client.apply(text)
            if output != "json":
                out.print(f"deployment {status['name']} {'created' if created else 'configured'}", highlight=False)
            if wait:
                for kind, line in client.follow(status["name"]):
                    if kind == "line" and output != "json":
                        err.print(line, highlight=False, markup=False)
                status = client.get(status["name"])
        _print_status([status], output, out)
        if wait and status["phase"] != "Ready":
            raise typer.Exit(1)

    @app.command()
    @user_errors
    def get(
        name: Annotated[str | None, typer.Argument(help="A deployment (default: all).")] = None,
        output: Annotated[str, typer.Option("-o", "--output", help="table or json.")] = "table",
        control: UrlOption = None,
        token: TokenOption = None,
    ) -> None:
        """Show deployments: phase, device, endpoints (-o json: the whole status, for scripts)."""
        from gatewright.control.client import ControlClient

        _check_output(output)
        with ControlClient(control, token) as client:
            statuses = [client.get(name)] if name else client.list()
        if output == "json" and name:
            out.print_json(json.dumps(statuses[0]))
            return
        _print_status(statuses, output, out)

    @app.command()
    @user_errors
    def delete(
        name: Annotated[str, typer.Argument(help="The deployment.")],
        control: UrlOption = None,
        token: TokenOption = None,
    ) -> None:
        """Delete a deployment: stop its build, unload it, remove its endpoint."""
        from gatewright.control.client import ControlClient

        with ControlClient(control, token) as client:
            client.delete(name)
        out.print(f"deployment {name} deleted", highlight=False)

    @app.command()
    @user_errors
    def logs(
        name: Annotated[str, typer.Argument(help="The deployment.")],
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream lines until Ready or Failed.")] = False,
        control: UrlOption = None,
        token: TokenOption = None,
    ) -> None:
        """A deployment's log: its events and its build job's output."""
        from gatewright.control.client import ControlClient

        with ControlClient(control, token) as client:
            if not follow:
                out.print(client.logs(name), end="", highlight=False, markup=False, soft_wrap=True)
                return
            for kind, line in client.follow(name):
                if kind == "line":
                    out.print(line, highlight=False, markup=False, soft_wrap=True)

    @app.command()
    @user_errors
    def push(
        bundle: Annotated[Path, typer.Argument(help="A firmware bundle directory.")],
        ref: Annotated[str, typer.Argument(help="oci://HOST[:PORT]/REPO:TAG, s3://BUCKET/KEY.tar or file:///PATH.tar")],
    ) -> None:
        """Push a firmware bundle to an OCI registry, an S3 bucket or a file (docs/store.md)."""
        from gatewright import store

        out.print(f"pushed {bundle} to {store.push(bundle, ref)}", highlight=False)

    @app.command()
    @user_errors
    def pull(
        ref: Annotated[str, typer.Argument(help="oci://HOST[:PORT]/REPO:TAG, s3://BUCKET/KEY.tar or file:///PATH.tar")],
        out_dir: Annotated[Path, typer.Option("--out", help="The bundle directory to write.")],
    ) -> None:
        """Pull a firmware bundle from an OCI registry, an S3 bucket or a file."""
        from gatewright import store

        bundle = store.pull(ref, out_dir)
        out.print(f"pulled {ref} into {bundle.path}", highlight=False)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GatewrightError(f"{path}: no such spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GatewrightError(f"{path}: cannot read the spec ({exc})") from None


def _check_output(output: str) -> None:
    if output not in ("table", "json"):
        raise GatewrightError(f"-o {output}: choose table or json")


def _print_status(statuses: list[dict[str, Any]], output: str, out: Console) -> None:
    if output == "json":
        out.print_json(json.dumps(statuses if len(statuses) != 1 else statuses[0]))
        return
    table = Table(box=None)
    for column in ("NAME", "ENGINE", "TARGET", "PHASE", "DEVICE", "REST", "GRPC", "REASON"):
        table.add_column(column)
    for s in statuses:
        spec = s["spec"]["spec"]
        endpoints = s.get("endpoints") or {}
        table.add_row(
            s["name"],
            spec["engine"],
            spec["target"] if spec["engine"] == "fpga" else "-",
            s["phase"],
            s.get("device") or "-",
            endpoints.get("rest", "-"),
            endpoints.get("grpc", "-"),
            "" if s["phase"] == "Ready" else s.get("reason", ""),
        )
    out.print(table)
