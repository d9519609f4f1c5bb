"""Benchmark 2: flat memory at scale.

For each size, generate a batch input of ~1 KB lines, then upload it (the
Uploads API, 64 MiB parts), validate it, run it against the instant fake
upstream, and download the output, sampling the resident memory (RSS) of
every overnight process (the API process and its worker processes) during
each phase. Target: under 300 MB throughout, independent of the size.

    python bench/memory.py --lines 100000 1000000
    python bench/memory.py --lines 10000000 --run-for 180  # 10 GB; see docs/benchmarks.md
    python bench/memory.py --lines 2000                  # smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import psutil

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

LINE_PAD = 900  # brings a line to about 1 KB


class PeakSampler(threading.Thread):
    """Samples the RSS of each process in a tree; keeps the peak per role."""

    def __init__(self, server: Proc, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self.running = True

    def run(self) -> None:
        while self.running:
            for process in self.server.tree():
                try:
                    rss = process.memory_info().rss
                    role = "api" if process.pid == self.server.popen.pid else "worker"
                except psutil.NoSuchProcess:
                    continue
                self.peaks[role] = max(self.peaks.get(role, 0), rss)
            time.sleep(self.interval)

    def take(self) -> dict[str, int]:
        peaks, self.peaks = self.peaks, {}
        return peaks


def one_size(workdir: Path, lines: int, skip_run: bool, run_for: float | None) -> list[list[str]]:
    path = chat_file(workdir / f"input-{lines}.jsonl", lines, pad=LINE_PAD)
    size = path.stat().st_size
    rows: list[list[str]] = []
    with fake_upstream(workdir) as upstream:
        config = write_config(
            workdir / "overnight.toml", upstream.url, 64, max_upload_bytes=64 * 1024**3
        )
        with overnight_server(workdir, config) as server:
            sampler = PeakSampler(server)
            sampler.start()
            client = openai.OpenAI(
                base_url=f"{server.url}/v1", api_key="bench", max_retries=3, timeout=3600
            )
            sampler.take()

            def phase(name: str, seconds: float) -> None:
                peaks = sampler.take()
                rows.append(
                    [
                        f"{lines:,}",
                        name,
                        f"{seconds:.1f}",
                        f"{peaks.get('api', 0) / 2**20:.0f}",
                        f"{peaks.get('worker', 0) / 2**20:.0f}",
                    ]
                )

            started = time.perf_counter()
            upload = client.uploads.upload_file_chunked(
                file=path, mime_type="application/jsonl", purpose="batch", part_size=64 * 2**20
            )
            assert upload.file is not None
            phase(f"upload ({size / 2**30:.2f} GiB)", time.perf_counter() - started)

            started = time.perf_counter()
            batch = client.batches.create(
                input_file_id=upload.file.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            while batch.status == "validating":
                time.sleep(0.2)
                batch = client.batches.retrieve(batch.id)
            phase("validate", time.perf_counter() - started)
            if skip_run:
                client.batches.cancel(batch.id)
                sampler.running = False
                return rows

            started = time.perf_counter()
            if run_for is not None:
                # Too big to run to the end here: run a while, then cancel;
                # the batch keeps what ran and lists the rest as cancelled.
                while batch.status == "in_progress" and time.perf_counter() - started < run_for:
                    time.sleep(1)
                    batch = client.batches.retrieve(batch.id)
                ran = batch.request_counts.completed if batch.request_counts else 0
                phase(f"run ({ran:,} lines, then cancel)", time.perf_counter() - started)
                started = time.perf_counter()
                batch = client.batches.cancel(batch.id)
            batch = wait_until_ended(client, batch, 1)
            assert batch.request_counts is not None
            if run_for is None:
                assert batch.status == "completed", batch.status
                assert batch.request_counts.completed == lines, batch.request_counts
                phase("run + finalise", time.perf_counter() - started)
            else:
                assert batch.status == "cancelled", batch.status
                assert batch.request_counts.completed + batch.request_counts.failed == lines
                phase("cancel + finalise", time.perf_counter() - started)

            for name, file_id in (
                ("output", batch.output_file_id),
                ("errors", batch.error_file_id),
            ):
                if file_id is None:
                    continue
                started = time.perf_counter()
                received = 0
                with httpx.stream(
                    "GET", f"{server.url}/v1/files/{file_id}/content", timeout=3600
                ) as response:
                    for piece in response.iter_bytes(1 << 20):
                        received += len(piece)
                phase(
                    f"download {name} ({received / 2**30:.2f} GiB)", time.perf_counter() - started
                )
            sampler.running = False
    path.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--skip-run", action="store_true", help="upload and validate only")
    parser.add_argument(
        "--run-for",
        type=float,
        default=None,
        help="run for this many seconds, then cancel and download what was kept",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the files go (needs ~3x the input)"
    )
    args = parser.parse_args()
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="overnight-bench-", dir=args.workdir) as tmp:
        for lines in args.lines:
            size_dir = Path(tmp) / str(lines)
            size_dir.mkdir()
            rows += one_size(size_dir, lines, args.skip_run, args.run_for)
    print(
        table(
            "Peak resident memory (MiB) of overnight's processes, by phase",
            ["lines", "phase", "seconds", "API process", "worker process"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
