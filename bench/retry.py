"""Benchmark 9: results while a batch runs, and retrying only what failed.

For each size: a batch of short chat lines runs against the fake upstream
in its own process, answering 10% of requests 400 (`--error-rate`, not
retried by the runner). While it runs, a client tails `GET
/v1/batches/{id}/output` and `/errors` with the `after` cursor every
`--poll` seconds, streaming each answer. Once it has ended the upstream
stops failing, `POST /v1/batches/{id}/retry` makes a batch of the failed
lines, it runs, and the merged output (`?merged=true`) is streamed. The
RSS of the API process and the worker process is sampled every 0.1 s and
the peak reported per phase. Checks along the way: the tail read exactly
the final files' lines, the retry holds exactly the failed lines, and the
merged output holds every line once.

    python bench/retry.py --lines 200000 1000000
    python bench/retry.py --lines 2000                  # smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    Proc,
    chat_file,
    fake_upstream,
    overnight_server,
    table,
    wait_until_ended,
    write_config,
)
from memory import PeakSampler

FAILURE_RATE = 0.1


class Tail(threading.Thread):
    """Tails one kind of a running batch's results with the cursor."""

    def __init__(self, url: str, batch_id: str, kind: str, poll: float) -> None:
        super().__init__(daemon=True)
        self.url = f"{url}/v1/batches/{batch_id}/{kind}"
        self.poll = poll
        self.lines = 0
        self.lines_while_running = 0
        self.reads = 0
        self.ids: set[str] = set()
        self.duplicates = 0

    def run(self) -> None:
        after: dict[str, str] = {}
        with httpx.Client(timeout=600) as http:
            while True:
                with http.stream("GET", self.url, params=after) as answer:
                    answer.raise_for_status()
                    running = answer.headers["x-overnight-incomplete"] == "true"
                    after = {"after": answer.headers["x-overnight-next-after"]}
                    got = self._count(answer.iter_lines())
                self.reads += 1
                self.lines += got
                if not running:
                    return
                self.lines_while_running += got
                time.sleep(self.poll)

    def _count(self, lines: Any) -> int:
        count = 0
        for line in lines:
            if not line:
                continue
            # "r-123": the custom_id is the first field of every line shape
            custom_id = line.split('"custom_id":"', 1)[1].split('"', 1)[0]
            if custom_id in self.ids:
                self.duplicates += 1
            self.ids.add(custom_id)
            count += 1
        return count


def stream_lines(url: str, params: dict[str, str] | None = None) -> int:
    count = 0
    with httpx.stream("GET", url, params=params, timeout=3600) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            count += bool(line)
    return count


def one_size(workdir: Path, lines: int, poll: float) -> list[list[str]]:
    path = chat_file(workdir / f"input-{lines}.jsonl", lines)
    rows: list[list[str]] = []
    with fake_upstream(workdir, error_rate=FAILURE_RATE, error_status=400, seed=1) as upstream:
        config = write_config(workdir / "overnight.toml", upstream.url, 64)
        with overnight_server(workdir, config) as server:
            sampler = PeakSampler(server)
            sampler.start()
            client = openai.OpenAI(
                base_url=f"{server.url}/v1", api_key="bench", max_retries=3, timeout=3600
            )
            file = client.files.create(file=path.open("rb"), purpose="batch")
            sampler.take()

            def phase(name: str, seconds: float, note: str = "") -> None:
                peaks = sampler.take()
                rows.append(
                    [
                        f"{lines:,}",
                        name,
                        f"{seconds:.1f}",
                        f"{peaks.get('api', 0) / 2**20:.0f}",
                        f"{peaks.get('worker', 0) / 2**20:.0f}",
                        note,
                    ]
                )

            started = time.perf_counter()
            batch = client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            tails = [Tail(server.url, batch.id, kind, poll) for kind in ("output", "errors")]
            for tail in tails:
                tail.start()
            for tail in tails:
                tail.join()
            batch = client.batches.retrieve(batch.id)
            counts = batch.request_counts
            assert batch.status == "completed" and counts is not None, batch
            output, errors = tails
            assert output.lines == counts.completed and errors.lines == counts.failed, (
                output.lines,
                errors.lines,
                counts,
            )
            assert output.duplicates == errors.duplicates == 0
            assert len(output.ids | errors.ids) == lines
            phase(
                "run, tailed",
                time.perf_counter() - started,
                f"{counts.failed:,} failed; {output.reads + errors.reads} reads, "
                f"{output.lines_while_running + errors.lines_while_running:,} lines "
                "while running",
            )

            _control(upstream, error_rate=0)
            started = time.perf_counter()
            again = client.post(
                f"/batches/{batch.id}/retry",
                body={"outcomes": ["failed"]},
                cast_to=openai.types.Batch,
            )
            phase("retry: create", time.perf_counter() - started, f"{counts.failed:,} lines")
            started = time.perf_counter()
            again = wait_until_ended(client, again, 0.2)
            assert again.request_counts is not None
            assert again.request_counts.total == counts.failed, again.request_counts
            assert again.status == "completed" and again.request_counts.failed == 0
            phase("retry: validate + run", time.perf_counter() - started)

            started = time.perf_counter()
            url = f"{server.url}/v1/batches/{again.id}/output"
            merged = stream_lines(url, {"merged": "true"})
            assert merged == lines, merged
            phase("merged output download", time.perf_counter() - started, f"{merged:,} lines")
            sampler.running = False
    path.unlink()
    return rows


def _control(upstream: Proc, **knobs: Any) -> None:
    base = upstream.url.removesuffix("/v1")
    httpx.post(f"{base}/_control", json=knobs, timeout=10).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between tail reads")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="overnight-bench-", dir=args.workdir) as tmp:
        for lines in args.lines:
            size_dir = Path(tmp) / str(lines)
            size_dir.mkdir()
            rows += one_size(size_dir, lines, args.poll)
    print(
        table(
            "Peak resident memory (MiB) of overnight's processes, by phase; "
            f"{FAILURE_RATE:.0%} of requests fail",
            ["lines", "phase", "seconds", "API process", "worker process", "notes"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
