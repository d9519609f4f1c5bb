"""The `overnight` command, one module per command group:

    serve.py     `serve`, `worker`: the long-running processes
    keys.py      `keys create|list|revoke`, on the server's own store
    files.py     `files ...`, over HTTP to any overnight server (remote.py)
    batches.py   `batches ...`, likewise, with live progress (progress.py)
    webhooks.py  `webhooks add|list|remove|rotate`, on the server's own store
    run.py       `run`: one file through an in-process service, resumable

Commands parse flags, call the core (or a server), and print; the work
lives below them."""

from __future__ import annotations

from typing import Annotated

import typer

from overnight import __version__
from overnight.cli.batches import batches_app
from overnight.cli.files import files_app
from overnight.cli.keys import keys_app
from overnight.cli.run import run
from overnight.cli.serve import serve, worker
from overnight.cli.webhooks import webhooks_app

app = typer.Typer(
    rich_markup_mode="markdown",
    name="overnight",
    help="A self-hosted Batch API for LLM inference.",
    no_args_is_help=True,
    add_completion=False,
)


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


app.command()(serve)
app.command()(worker)
app.command()(run)
app.add_typer(keys_app, name="keys")
app.add_typer(files_app, name="files")
app.add_typer(batches_app, name="batches")
app.add_typer(webhooks_app, name="webhooks")


def main() -> None:
    app()


__all__ = ["app", "main"]
