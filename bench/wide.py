"""Benchmark 12: wide dispatch, many slots against a slow upstream.

A model with `max_concurrency` SLOTS answers every request in LATENCY
seconds, so at best a batch runs at SLOTS / LATENCY requests per second.
This measures how close overnight gets, with one or several worker
processes, and how much memory each process takes meanwhile.

The fake upstream runs as UPSTREAMS processes serving one model as replicas
(`base_urls`): one process holds at most one connection per request in
flight, and a process may open only so many (here 20,000 file descriptors).
The achieved rate is taken over the batch's steady state: from when 20% of
its lines are done to when 80% are, so the first round (nothing answers
before LATENCY) and the end are left out; the batch is polled as often as
the API answers. The whole run is also compared with the best possible by
the batch's own timestamps (in_progress to finalizing, whole seconds):
LATENCY * ceil(LINES / SLOTS), every slot busy every round.

    python bench/wide.py                                  # the table's rows
    python bench/wide.py --case 19000:10:1                # one worker, SQLite
    python bench/wide.py --case 20000:10:3 --database postgresql  # three workers
    python bench/wide.py --case 200:0.5:1 --lines 1000     # smoke test

The failed lines are counted in the table (and the first one printed):
a wide run is only a result if none failed.

A case is SLOTS:LATENCY:WORKERS. Lines default to enough for a steady state:
at least four rounds of slots and 20 seconds at the ideal rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import ENDED, Proc, chat_file, fake_upstream, local_http, overnight_server, table

#: File descriptors one fake upstream process should hold at most.
CONNECTIONS_PER_UPSTREAM = 8000
PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "root", "database": "test"}


@dataclass(frozen=True)
class Case:
    slots: int
    latency: float
    workers: int

    @classmethod
    def parse(cls, text: str) -> Case:
        slots, latency, workers = text.split(":")
        return cls(int(slots), float(latency), int(workers))

    @property
    def ideal(self) -> float:
        return self.slots / self.latency


@dataclass
class Sample:
    at: float
    completed: int


def crossing(samples: list[Sample], target: float) -> float:
    """When `completed` reached `target`, interpolated between samples."""
    for before, after in itertools.pairwise(samples):
        if after.completed >= target > before.completed:
            share = (target - before.completed) / (after.completed - before.completed)
            return before.at + share * (after.at - before.at)
    raise ValueError(f"never reached {target}")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    import asyncpg

    name = f"overnight_bench_wide_{secrets.token_hex(4)}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(**PG_ADMIN, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        host, port, user = PG_ADMIN["host"], PG_ADMIN["port"], PG_ADMIN["user"]
        yield f"postgresql+asyncpg://{user}@{host}:{port}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def write_config(
    path: Path, case: Case, urls: list[str], database_url: str | None, chunk_lines: int | None
) -> Path:
    settings: dict[str, Any] = {"worker_processes": case.workers}
    if database_url is not None:
        settings["database_url"] = database_url
    if chunk_lines is not None:
        settings["chunk_lines"] = chunk_lines
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    lines += [
        "[[models]]",
        'name = "bench-model"',
        f"base_urls = {json.dumps(urls)}",
        f"max_concurrency = {case.slots}",
        "adaptive = false",
        f"timeout = {case.latency * 3 + 60}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for_workers(server: Proc, workers: int) -> None:
    """Until every worker is counted (each has its share of the slots)."""
    deadline = time.monotonic() + 60
    while len(local_http().get(f"{server.url}/health", timeout=5).json()["workers"]) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not all start")
        time.sleep(0.2)
    time.sleep(1.0)  # a heartbeat or two, so every worker has shrunk to its share


def trace(sample: Sample, stats: httpx.Client, upstreams: list[Proc], server: Proc) -> None:
    """Print a sample with the requests in flight as the upstreams count them
    and as the workers do (their limiters); either may be too busy to say."""
    at_upstreams: int | str = "?"
    sent: int | str = "?"
    with contextlib.suppress(httpx.HTTPError):
        at_upstreams = sum(
            stats.get(f"{proc.url.removesuffix('/v1')}/_stats").json()["in_flight"]
            for proc in upstreams
        )
    with contextlib.suppress(httpx.HTTPError):
        sent = int(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in stats.get(f"{server.url}/metrics").text.splitlines()
                if line.startswith("overnight_model_in_flight{")
            )
        )
    print(
        f"{sample.at:6.2f} s  done {sample.completed:>8,}  "
        f"in flight at the upstreams {at_upstreams:>6}, as the workers count {sent:>6}",
        file=sys.stderr,
    )


def run_case(case: Case, lines: int, args: argparse.Namespace) -> dict[str, Any]:
    upstreams = args.upstreams or max(1, math.ceil(case.slots / CONNECTIONS_PER_UPSTREAM))
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="overnight-wide-")))
        path = chat_file(workdir / "input.jsonl", lines)
        procs = [
            stack.enter_context(
                fake_upstream(workdir, f"upstream-{i}", latency=case.latency, backlog=4096)
            )
            for i in range(upstreams)
        ]
        database_url = (
            stack.enter_context(postgres_database()) if args.database == "postgresql" else None
        )
        config = write_config(
            workdir / "overnight.toml",
            case,
            [proc.url for proc in procs],
            database_url,
            args.chunk_lines,
        )
        server = stack.enter_context(overnight_server(workdir, config))
        wait_for_workers(server, case.workers)
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="bench", max_retries=3)
        stats = httpx.Client(timeout=10)
        stack.callback(client.close)
        stack.callback(stats.close)
        with path.open("rb") as handle:
            file = client.files.create(file=handle, purpose="batch")
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        started = time.monotonic()
        samples: list[Sample] = []
        peak_rss: dict[int, tuple[str, int]] = {}
        upstream_rss = 0
        while True:
            batch = client.batches.retrieve(batch.id)
            counts = batch.request_counts
            samples.append(Sample(time.monotonic() - started, counts.completed if counts else 0))
            for process in server.tree():
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss = process.memory_info().rss
                    role = "api" if process.pid == server.popen.pid else "worker"
                    if rss > peak_rss.get(process.pid, ("", 0))[1]:
                        peak_rss[process.pid] = (role, rss)
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    upstream_rss = max(upstream_rss, proc.ps.memory_info().rss)
            if args.trace:
                trace(samples[-1], stats, procs, server)
            if batch.status in ENDED:
                break
            time.sleep(0.1)
        assert batch.status == "completed", batch
        assert batch.request_counts is not None
        failed = batch.request_counts.failed
        if failed:  # say what failed, and go on: the rate is still measured
            first = client.files.content(batch.error_file_id or "").text.splitlines()[0]
            print(f"{failed} lines failed; the first: {first[:300]}", file=sys.stderr)

    done = samples[-1].completed
    t20, t80 = crossing(samples, 0.2 * done), crossing(samples, 0.8 * done)
    rate = 0.6 * done / (t80 - t20)
    # The whole run by the batch's own clock: at best every slot runs a
    # request each LATENCY, so the lines take ceil(lines / slots) rounds.
    running = (batch.finalizing_at or 0) - (batch.in_progress_at or 0)
    best = case.latency * math.ceil(lines / case.slots)
    mib = 1024 * 1024
    return {
        "case": case,
        "lines": lines,
        "upstreams": upstreams,
        "rate": rate,
        "ratio": rate / case.ideal,
        "running": running,
        "whole_ratio": best / max(running, 1),
        "api_rss": max((rss for role, rss in peak_rss.values() if role == "api"), default=0) / mib,
        "worker_rss": max((rss for role, rss in peak_rss.values() if role == "worker"), default=0)
        / mib,
        "upstream_rss": upstream_rss / mib,
        "seconds": samples[-1].at,
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", action="append", type=Case.parse, help="SLOTS:LATENCY:WORKERS")
    parser.add_argument("--lines", type=int, default=None, help="lines per batch")
    parser.add_argument("--upstreams", type=int, default=None, help="fake upstream processes")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--chunk-lines", type=int, default=None)
    parser.add_argument("--label", default="", help="a name for this run in the table")
    parser.add_argument("--trace", action="store_true", help="print every sample to stderr")
    args = parser.parse_args()
    cases = args.case or [Case(10_000, 5.0, 1), Case(8_000, 1.0, 1), Case(19_000, 10.0, 1)]

    rows = []
    for case in cases:
        lines = args.lines or max(4 * case.slots, math.ceil(20 * case.ideal))
        result = run_case(case, lines, args)
        print(json.dumps({**result, "case": vars(case), "label": args.label}), flush=True)
        rows.append(
            [
                f"{case.slots:,}",
                f"{case.latency:g} s",
                case.workers,
                args.database,
                f"{lines:,}",
                f"{case.ideal:,.0f}",
                f"{result['rate']:,.0f}",
                f"{result['ratio']:.2f}",
                f"{result['failed']:,}",
                f"{result['running']} s ({result['whole_ratio']:.2f})",
                f"{result['api_rss']:.0f} / {result['worker_rss']:.0f}",
                f"{result['upstreams']} ({result['upstream_rss']:.0f} MiB)",
            ]
        )
    print(
        table(
            f"Wide dispatch{' (' + args.label + ')' if args.label else ''}: steady state, 20-80% of the lines",
            [
                "slots",
                "latency",
                "workers",
                "database",
                "lines",
                "ideal req/s",
                "achieved req/s",
                "ratio",
                "failed lines",
                "whole run (best / it)",
                "peak RSS MiB api / worker",
                "upstreams (peak RSS)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
