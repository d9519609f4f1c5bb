"""What every command group shares: the console for people (stderr), the
options that name a configuration, and the one way a command gives up.

Commands print their result on stdout (a table, a file's bytes, or JSON with
`--json`) and everything meant for a person watching (progress, notes,
errors) on stderr, so `overnight batches list --json | jq` stays clean."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from overnight.settings import Settings
    from overnight.store.contracts import Store

T = TypeVar("T")

console = Console(stderr=True)

#: Exit codes (docs/cli.md): the batch completed; it ended otherwise (failed,
#: expired, cancelled); the command was misused or the server could not be
#: used; the person pressed Ctrl-C (the shell's own convention).
EXIT_COMPLETED = 0
EXIT_NOT_COMPLETED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

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
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout, for scripts.")
]


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """End the command with one line on stderr: no traceback, no wrapping."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def readable_file(path: Path) -> Path:
    """`path`, if it is a file this command can read; else the command ends
    with one line (click's own check draws a usage box around it)."""
    if not path.exists():
        fail(f"no such file: {path}")
    if not path.is_file():
        fail(f"not a file: {path}")
    if not os.access(path, os.R_OK):
        fail(f"cannot read {path}: permission denied")
    return path


def as_new_file(temporary: str) -> None:
    """Give a file made by `tempfile.mkstemp` (private: 0600) the mode any
    new file gets under the umask, before it is renamed into place for
    the person to read and share."""
    mask = os.umask(0o022)  # reading the umask means setting it: put it back at once
    os.umask(mask)
    os.chmod(temporary, 0o666 & ~mask)


def note(message: str) -> None:
    """A line for the person watching (stderr), never for a script."""
    console.print(message, soft_wrap=True, highlight=False)


def print_json(value: Any) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def load_cli_settings(config: Path | None, **overrides: Any) -> Settings:
    """Settings from the config file, the environment and flags; a bad one
    ends the command with its message."""
    from overnight.settings import load_settings

    try:
        return load_settings(config, **overrides)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def when(timestamp: int | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def columns(rows: Sequence[tuple[str, ...]]) -> None:
    """Print rows as columns as wide as their widest cell, two spaces apart."""
    if not rows:
        return
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Alembic announces each of its plugins at INFO when imported: seven
    # lines of noise at every start, before anything has happened.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def run_on_store(settings: Settings, use: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store the settings name, run one use case on it, close it;
    a refused request (an unknown key, a bad tenant name) ends the command
    with its message and exit 2, as every command's do (docs/cli.md)."""
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
        fail(exc.message)
