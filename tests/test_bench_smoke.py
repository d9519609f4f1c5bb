"""Every benchmark runs end to end at a tiny scale: correctness only, no
timing assertions (the figures live in docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

CASES = {
    "dispatch": ["--lines", "2000", "--concurrency", "16"],
    "memory": ["--lines", "2000"],
    "validation": ["--lines", "20000"],
    "api_latency": ["--lines", "5000", "--samples", "20"],
    "embedded": ["--prompts", "2", "--max-tokens", "8"],
    "wide": ["--case", "100:0.2:1", "--lines", "1000"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs(name: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *CASES[name]],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "|" in result.stdout  # it printed its table
