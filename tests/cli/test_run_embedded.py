"""`overnight run` with no configuration at all: the embedded model
answers, so the quick start's file runs on a fresh clone with nothing else
installed. (Two of its lines, kept short: the point is the default, not
the model's speed.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from overnight.cli import app

from helpers import ROOT, read_jsonl

pytestmark = pytest.mark.embedded


def test_run_with_no_config_uses_the_embedded_model(tmp_path: Path) -> None:
    lines = [json.loads(line) for line in (ROOT / "examples" / "quickstart.jsonl").open()][:2]
    for line in lines:
        line["body"]["max_tokens"] = 4
    source = tmp_path / "quickstart.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    output = tmp_path / "out.jsonl"

    result = CliRunner(
        env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "OVERNIGHT_CONFIG": None}
    ).invoke(app, ["run", str(source), "-o", str(output), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    rows = read_jsonl(output.read_text())
    assert sorted(row["custom_id"] for row in rows) == ["request-1", "request-2"]
    for row in rows:
        body = row["response"]["body"]
        assert body["model"] == "smollm2-135m-instruct"
        assert body["choices"][0]["message"]["content"].strip()
