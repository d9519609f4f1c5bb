"""Every benchmark runs end to end at a tiny scale: correctness only, no
timing assertions (the figures live in docs/benchmarks.md).

Each script runs as `python bench/<name>.py` would run it (`runpy`, as
`__main__`, with its arguments in `sys.argv`), but in the test's process:
a process of its own spent about a CPU-second importing what this one has
imported already. The servers and fake upstreams it starts are processes
of their own either way.
"""

from __future__ import annotations

import runpy
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


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The servers a benchmark starts run their worker in the server's own
    # process here: about 1.6 CPU-seconds less a start, over a dozen starts,
    # and the figures the smoke run prints are not read. The benchmarks
    # themselves measure the default, a worker process beside the API's. A
    # hung script is still stopped: pytest's `timeout` (pyproject) bounds it.
    monkeypatch.setenv("OVERNIGHT_WORKER_PROCESSES", "0")
    script = BENCH / f"{name}.py"
    monkeypatch.setattr(sys, "argv", [str(script), *CASES[name]])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts bench/ first
    runpy.run_path(str(script), run_name="__main__")
    assert "|" in capsys.readouterr().out  # it printed its table
