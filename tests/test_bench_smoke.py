"""Every benchmark runs end to end at a tiny scale: correctness only, no
timing assertions (the figures live in docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

#: Sizes just big enough for every phase of each benchmark to run: a case's
#: CPU is mostly its processes starting, and the rest grows with the lines.
CASES = {
    "dispatch": ["--lines", "300", "--concurrency", "8"],
    "memory": ["--lines", "300"],
    "validation": ["--lines", "2000"],
    "api_latency": ["--lines", "800", "--samples", "5"],
    "embedded": ["--prompts", "2", "--max-tokens", "4", "--rounds", "1", "--sequences", "2"],
    "retry": ["--lines", "2000"],
    "prefix": ["--part", "replicas", "--replica-lines", "80"],
    "wide": ["--case", "100:0.2:1", "--lines", "1000"],
}


#: The servers a benchmark starts run their worker in their own process
#: here: about 1.6 CPU-seconds less a start, over a dozen starts, and the
#: figures the smoke run prints are not read. The benchmarks themselves
#: measure the default, a worker process beside the API's.
ENV = {**os.environ, "OVERNIGHT_WORKER_PROCESSES": "0"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs(name: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *CASES[name]],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "|" in result.stdout  # it printed its table
