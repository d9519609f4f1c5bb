"""`overnight --version` is the installed distribution's version, which
pyproject.toml sets; tests/installed checks it against an installed wheel."""

from __future__ import annotations

import importlib.metadata

from typer.testing import CliRunner

from overnight.cli import app


def test_version_is_the_installed_distributions() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"overnight {importlib.metadata.version('overnight')}\n"
