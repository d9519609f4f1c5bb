"""How the client commands (`files`, `batches`) find and talk to a server:
`--base-url` and `--api-key`, or their environment variables, and one
place where a refused request ends the command with exit code 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from overnight.cli.common import EXIT_USAGE, fail
from overnight.cli.remote import DEFAULT_BASE_URL, Remote, ServerRefused

BaseUrlOption = Annotated[
    str,
    typer.Option(
        "--base-url",
        envvar="OVERNIGHT_BASE_URL",
        help="The overnight server (with or without /v1).",
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="OVERNIGHT_API_KEY",
        help="The API key, when the server has keys (none in single-user local mode).",
        show_default=False,
    ),
]

__all__ = ["DEFAULT_BASE_URL", "ApiKeyOption", "BaseUrlOption", "connected"]


@contextmanager
def connected(base_url: str, api_key: str | None) -> Iterator[Remote]:
    """A client for the command's server; a request it refuses (or cannot
    make) ends the command with one line and exit code 2."""
    try:
        with Remote(base_url, api_key) as remote:
            yield remote
    except ServerRefused as refused:
        fail(str(refused), EXIT_USAGE)
