"""Benchmark 1 (dispatch overhead) and 6 (a peer parallel processor).

A batch of chat lines runs through overnight against an instant fake
upstream in its own process. In the same run, at the same concurrency and
against the same upstream, a bare aiohttp client (the ceiling), a plain
asyncio + aiohttp + semaphore script (the peer) and overnight's own HTTP/1.1
client driven bare (what overnight's dispatch could at most reach) send the
same requests.

    python bench/dispatch.py                 # 200k lines
    python bench/dispatch.py --lines 2000    # smoke test
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    chat_file,
    fake_upstream,
    overnight_server,
    table,
    wait_until_ended,
    write_config,
)


def run_overnight(workdir: Path, upstream_url: str, path: Path, concurrency: int) -> dict[str, Any]:
    config = write_config(workdir / "overnight.toml", upstream_url, concurrency)
    with overnight_server(workdir, config) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="bench", max_retries=3)
        with path.open("rb") as handle:
            file = client.files.create(file=handle, purpose="batch")
        cpu_before = server.cpu_seconds()
        started = time.perf_counter()
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = wait_until_ended(client, batch, 0.2)
        seconds = time.perf_counter() - started
        cpu = server.cpu_seconds() - cpu_before
        counts = batch.request_counts
        assert batch.status == "completed" and counts is not None, batch
        assert counts.completed == counts.total, counts
        running = (batch.finalizing_at or 0) - (batch.in_progress_at or 0)
        return {
            "requests": counts.total,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "running_seconds": running,
        }


def run_script(script: str, *args: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, str(Path(__file__).parent / script), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:
        workdir = Path(tmp)
        path = chat_file(workdir / "input.jsonl", args.lines)
        with fake_upstream(workdir) as upstream:
            endpoint = f"{upstream.url}/chat/completions"
            ceiling_args = (
                "--url",
                endpoint,
                "--file",
                str(path),
                "--concurrency",
                str(args.concurrency),
            )
            before = run_script("ceiling_client.py", *ceiling_args)
            peer = run_script(
                "peer_processor.py",
                "--url",
                endpoint,
                "--file",
                str(path),
                "--out",
                str(workdir / "peer.jsonl"),
                "--concurrency",
                str(args.concurrency),
            )
            ours = run_overnight(workdir, upstream.url, path, args.concurrency)
            after = run_script("ceiling_client.py", *ceiling_args)
            native = run_script("ceiling_client.py", *ceiling_args, "--client", "native")
            # The ceiling runs before and after overnight; their mean is the
            # reference, so drift in the machine's speed during the run cancels.
            ceiling = {
                key: (before[key] + after[key]) / 2
                for key in ("requests", "seconds", "cpu_seconds")
            }

    def row(name: str, result: dict[str, Any]) -> list[Any]:
        rate = result["requests"] / result["seconds"]
        return [
            name,
            f"{int(result['requests']):,}",
            f"{result['seconds']:.1f}",
            f"{rate:,.0f}",
            f"{1e6 * result['cpu_seconds'] / result['requests']:.0f}",
            f"{rate / (ceiling['requests'] / ceiling['seconds']):.2f}",
        ]

    print(
        table(
            f"Dispatch: {args.lines:,} chat lines, concurrency {args.concurrency}, instant fake upstream",
            ["client", "requests", "seconds", "requests/s", "client CPU µs/request", "x ceiling"],
            [
                row("bare aiohttp (ceiling)", ceiling),
                row("bare native client (overnight's backends/http1.py)", native),
                row("peer: asyncio + aiohttp + semaphore", peer),
                row("overnight (upload excluded; validate + run + finalise)", ours),
            ],
        )
    )
    running_rate = ours["requests"] / max(ours["running_seconds"], 1)
    print(f"\novernight while in_progress only: {running_rate:,.0f} requests/s")


if __name__ == "__main__":
    main()
