"""The `overnight` command. Commands parse flags, build Settings, call the
core, and print; nothing else lives here."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from overnight import __version__

if TYPE_CHECKING:
    from overnight.settings import Settings

app = typer.Typer(
    name="overnight",
    help="A self-hosted Batch API for LLM inference.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML config file (also $OVERNIGHT_CONFIG).", show_default=False
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where the database and files live [default: ./.overnight].",
        show_default=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"overnight {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """A self-hosted Batch API for LLM inference."""


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind [default: 127.0.0.1].", show_default=False)
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on [default: 8000].", show_default=False)
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Also run the scheduler and workers.")
    ] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the API, the scheduler and the workers in one process."""
    import uvicorn

    from overnight.api.app import create_app
    from overnight.runtime import DataDirInUse, Runtime
    from overnight.settings import load_settings

    _configure_logging(log_level)
    try:
        settings = load_settings(config, host=host, port=port, data_dir=data_dir, worker=worker)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop_on_failure(error: BaseException) -> None:
        failures.append(error)
        if server is not None:
            server.should_exit = True

    runtime = Runtime(settings, on_failure=stop_on_failure)
    config_ = uvicorn.Config(
        create_app(settings, runtime),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config_)
    models = ", ".join(m.name for m in settings.served_models)
    console.print(f"overnight {__version__} on [bold]{settings.base_url}[/bold] serving {models}")
    try:
        server.run()
    except DataDirInUse as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if failures or not server.started:
        raise typer.Exit(1)


@app.command()
def worker(
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the scheduler and workers only, no API: add execution capacity to a
    deployment on PostgreSQL and S3-compatible storage."""
    import uvloop

    from overnight.runtime import DataDirInUse
    from overnight.settings import load_settings

    _configure_logging(log_level)
    try:
        settings = load_settings(config, data_dir=data_dir, worker=True)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    models = ", ".join(m.name for m in settings.served_models)
    console.print(f"overnight {__version__} worker serving {models}")
    try:
        failed = uvloop.run(_run_worker(settings))
    except DataDirInUse as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if failed:
        raise typer.Exit(1)


async def _run_worker(settings: Settings) -> bool:
    """Run until SIGTERM/SIGINT; True if the worker stopped on its own failure."""
    import asyncio
    import signal

    from overnight.runtime import Runtime

    stop = asyncio.Event()
    failures: list[BaseException] = []

    def fail(error: BaseException) -> None:
        failures.append(error)
        stop.set()

    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    runtime = Runtime(settings, on_failure=fail)
    await runtime.start()
    try:
        await stop.wait()
    finally:
        await runtime.stop()
    return bool(failures)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main() -> None:
    app()
