"""The `overnight` command. Commands parse flags, build Settings, call the
core, and print; nothing else lives here."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from overnight import __version__
from overnight.cli_webhooks import webhooks_app

if TYPE_CHECKING:
    from overnight.settings import Settings
    from overnight.store.contracts import Store

T = TypeVar("T")

app = typer.Typer(
    name="overnight",
    help="A self-hosted Batch API for LLM inference.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)
app.add_typer(webhooks_app, name="webhooks")  # `overnight webhooks ...` (cli_webhooks.py)

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
        help="Where the database and files live (default: ./.overnight).",
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
    _configure_logging(log_level)
    settings = _settings(
        config,
        host=host,
        port=port,
        data_dir=data_dir,
        worker=worker,
        allow_insecure_public=allow_insecure_public or None,
    )
    from overnight.runtime import DataDirInUse, Runtime, ensure_data_dir_free

    try:
        ensure_data_dir_free(settings)
    except DataDirInUse as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if not _check_exposure(settings):
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
    supervised_by: Annotated[int | None, typer.Option(hidden=True)] = None,
    worker_id: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the scheduler and workers only, no API: add execution capacity to a
    deployment on PostgreSQL and S3-compatible storage."""
    import uvloop

    from overnight.runtime import DataDirInUse

    _configure_logging(log_level)
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
        settings = _settings(config, data_dir=data_dir, worker=True)
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


def _settings(config: Path | None, **overrides: Any) -> Settings:
    """Settings from the config file, the environment and flags; a bad one
    ends the command with its message."""
    from overnight.settings import load_settings

    try:
        return load_settings(config, **overrides)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _check_exposure(settings: Settings) -> bool:
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


# ---------------------------------------------------------------------- keys

keys_app = typer.Typer(
    help="API keys: made here, shown once, stored only as hashes.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="The tenant the keys act for.", show_default=False)
]


@keys_app.command("create")
def keys_create(
    tenant: TenantOption = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin key: sees every tenant, sets quotas.")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Make a key and print it (only this once; only its hash is kept)."""
    from overnight.tenants import create_key

    settings = _settings(config, data_dir=data_dir)
    made = _run_on_store(settings, lambda store: create_key(store, tenant=tenant, admin=admin))
    who = f"tenant {made.key.tenant}" if made.key.tenant else "admin"
    console.print(f"created {made.key.id} ({who}); keep the key now, it is not shown again:")
    typer.echo(made.secret)


@keys_app.command("list")
def keys_list(
    tenant: TenantOption = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List keys made with `keys create` (without their secrets)."""
    settings = _settings(config, data_dir=data_dir)
    keys = _run_on_store(
        settings, lambda store: store.list_api_keys(tenant, include_revoked=revoked)
    )
    rows = [("ID", "KEY", "ROLE", "TENANT", "CREATED", "REVOKED")]
    rows += [
        (
            key.id,
            key.shown + "...",
            key.role.value,
            key.tenant or "-",
            _when(key.created_at),
            _when(key.revoked_at),
        )
        for key in keys
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:  # columns as wide as their widest cell, two spaces apart
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str | None,
        typer.Argument(help="The key's id (or its shown prefix).", show_default=False),
    ] = None,
    tenant: TenantOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke one key, or with --tenant alone every key of that tenant. A
    revoked key is refused from the next request on."""
    from overnight.tenants import revoke_keys

    settings = _settings(config, data_dir=data_dir)
    revoked = _run_on_store(
        settings, lambda store: revoke_keys(store, key_id=key_id, tenant=tenant)
    )
    for key in revoked:
        typer.echo(f"revoked {key.id} ({key.shown}...)")


def _run_on_store(settings: Settings, use: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store the settings name, run one use case on it, close it;
    a refused request ends the command with its message."""
    import uvloop

    from overnight.errors import OvernightError
    from overnight.store import open_store

    async def run() -> T:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await open_store(settings.resolved_database_url)
        try:
            return await use(store)
        finally:
            await store.close()

    try:
        return uvloop.run(run())
    except OvernightError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


def _when(timestamp: int | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Alembic announces each of its plugins at INFO when imported: seven
    # lines of noise at every start, before anything has happened.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def main() -> None:
    app()
