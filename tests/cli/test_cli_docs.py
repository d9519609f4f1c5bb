"""docs/cli.md moves with the commands: every command has a section, and
every option a person can pass is named in it (or, for the options every
client command shares, in "Conventions")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main

from overnight.cli import app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def commands(command: Any, path: tuple[str, ...] = ("overnight",)) -> Iterator[tuple[str, Any]]:
    """Every leaf command, as `overnight group name`, with its click object."""
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def section(text: str, command: str) -> str:
    """The text from a command's heading to the next heading."""
    for heading in (f"### `{command}`", f"## `{command}`", f"## {command}"):
        if heading in text:
            rest = text.split(heading, 1)[1]
            return rest.split("\n#", 1)[0]
    raise AssertionError(f"docs/cli.md has no section for `{command}`")


def test_every_command_and_option_is_documented() -> None:
    text = DOCS.read_text()
    shared = section(text, "Conventions")
    missing = []
    for name, command in commands(typer.main.get_command(app)):
        body = section(text, name)
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            for option in (*param.opts, *param.secondary_opts):
                documented = option in body or option in shared
                if option.startswith("--") and option != "--help" and not documented:
                    missing.append(f"{name} {option}")
    assert missing == []
