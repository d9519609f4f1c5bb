"""`overnight serve` and `overnight worker`: the long-running processes.
They parse flags, build Settings, and hand them to uvicorn or the runner."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from overnight import __version__
from overnight.cli.common import (
    ConfigOption,
    DataDirOption,
    configure_logging,
    console,
    fail,
    load_cli_settings,
)

if TYPE_CHECKING:
    from overnight.settings import Settings


def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default: 127.0.0.1).", show_default=False)
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: 8000).", show_default=False)
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Also run the scheduler and workers.")
    ] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    allow_insecure_public: Annotated[
        bool,
        typer.Option(
            "--allow-insecure-public",
            help="Serve single-user local mode (no API keys) on a non-loopback address.",
        ),
    ] = False,
) -> None:
    """Run the API, the scheduler and the workers (in worker processes of
    its own, `worker_processes`)."""
    configure_logging(log_level)
    settings = load_cli_settings(
        config,
        host=host,
        port=port,
        data_dir=data_dir,
        worker=worker,
        allow_insecure_public=allow_insecure_public or None,
    )
    _refuse_models_it_cannot_run(settings)
    from overnight.runtime import DataDirInUse, Runtime, ensure_data_dir_free

    try:
        ensure_data_dir_free(settings)
    except DataDirInUse as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if not check_exposure(settings):
        raise typer.Exit(2)
    _share_metrics_between_processes(settings)

    import uvicorn

    from overnight.api.app import create_app
    from overnight.api.protocol import bounded_protocol

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
        http=bounded_protocol(settings.max_header_bytes, settings.header_timeout),
        timeout_keep_alive=settings.keep_alive_timeout,
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config_)
    models = ", ".join(m.name for m in settings.served_models)
    console.print(f"overnight {__version__} on [bold]{settings.base_url}[/bold] serving {models}")
    if settings.ui:
        console.print(f"dashboard: {settings.base_url.rstrip('/')}/ui/")
    try:
        server.run()
    except DataDirInUse as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if failures or not server.started:
        raise typer.Exit(1)


def worker(
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    supervised_by: Annotated[int | None, typer.Option(hidden=True)] = None,
    worker_id: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the scheduler and workers only, no API: add execution capacity to a
    deployment on PostgreSQL and S3-compatible storage."""
    import uvloop

    from overnight.runtime import DataDirInUse

    configure_logging(log_level)
    if supervised_by is not None:
        # A worker process of `serve` (runner/supervisor.py): its settings
        # come from the parent, and it dies with it.
        from overnight.runner.supervisor import SETTINGS_ENV, die_with_parent
        from overnight.settings import Settings

        die_with_parent(supervised_by)
        # Ctrl-C in a terminal reaches the whole process group; the parent
        # stops its workers itself (SIGTERM), in order, so they ignore it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the loop runs, too
        settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    else:
        settings = load_cli_settings(config, data_dir=data_dir, worker=True)
        _refuse_models_it_cannot_run(settings)
        models = ", ".join(m.name for m in settings.served_models)
        console.print(f"overnight {__version__} worker serving {models}")
    try:
        failed = uvloop.run(_run_worker(settings, worker_id, supervised=supervised_by is not None))
    except DataDirInUse as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if failed:
        raise typer.Exit(1)


async def _run_worker(settings: Settings, worker_id: str | None, *, supervised: bool) -> bool:
    """Run until SIGTERM/SIGINT; True if the worker stopped on its own failure."""
    import asyncio
    import signal

    from overnight.runner.supervisor import follow_parent
    from overnight.runtime import Runtime
    from overnight.types import WorkerId

    stop = asyncio.Event()
    failures: list[BaseException] = []

    def fail(error: BaseException) -> None:
        failures.append(error)
        stop.set()

    loop = asyncio.get_running_loop()
    # A worker process of `serve` leaves Ctrl-C to its parent, which stops
    # it with SIGTERM once the API has stopped taking requests.
    for number in (signal.SIGTERM,) if supervised else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    child = WorkerId(worker_id) if supervised and worker_id else None
    runtime = Runtime(settings, on_failure=fail, child_worker=child)
    await runtime.start()
    follower = asyncio.create_task(follow_parent(runtime.wakeups.notify)) if supervised else None
    try:
        await stop.wait()
    finally:
        if follower is not None:
            follower.cancel()
        await runtime.stop()
    return bool(failures)


def _share_metrics_between_processes(settings: Settings) -> None:
    """With worker processes, metrics live in files every process writes
    (PROMETHEUS_MULTIPROC_DIR); it must be set before prometheus_client is
    imported, and it starts empty."""
    if settings.worker and settings.worker_processes > 0:
        import shutil

        folder = settings.data_dir.resolve() / "metrics"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def _refuse_models_it_cannot_run(settings: Settings) -> None:
    """A process that runs models (an API-only one runs none) and lacks what
    one of them needs, the embedded extra say, ends here with one line on
    what to do, not with a traceback at its first request."""
    from overnight.backends.availability import why_models_cannot_run

    if settings.worker and (problem := why_models_cannot_run(settings)):
        fail(problem)


def check_exposure(settings: Settings) -> bool:
    """Single-user local mode lets every caller in as the tenant `default`:
    it may listen on loopback only, unless told otherwise. Say which mode
    the server is in; False means refuse to start."""
    import uvloop

    from overnight.tenants import is_loopback, keys_exist

    if settings.tenants or settings.admin_api_key_hashes or uvloop.run(keys_exist(settings)):
        return True
    if is_loopback(settings.host):
        console.print(
            "single-user local mode: no API keys are configured, so every caller acts as the "
            "tenant 'default'; listening on loopback only."
        )
        return True
    if settings.allow_insecure_public:
        console.print(
            f"[yellow]warning:[/yellow] single-user local mode on {settings.host}: no API keys "
            "are configured and anyone who can reach this address gets in "
            "(--allow-insecure-public)."
        )
        return True
    console.print(
        f"[red]error:[/red] refusing to listen on {settings.host} in single-user local mode: "
        "no API keys are configured, so anyone who can reach it would get in. Configure "
        "\\[\\[tenants]] or run `overnight keys create --tenant NAME` first, listen on 127.0.0.1, "
        "or pass --allow-insecure-public if this network is trusted."
    )
    return False
