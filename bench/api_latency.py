"""Benchmark 4: API latency while a big batch runs at full speed.

A batch (1M lines by default) runs against the instant fake upstream; once
it is dispatching, this measures GET /v1/batches/{id} and GET /v1/files
(limit 20), one after the other, many times. Target: p99 under 50 ms.

    python bench/api_latency.py
    python bench/api_latency.py --lines 20000 --samples 50   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).parent))
from _common import chat_file, fake_upstream, overnight_server, table, write_config


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:
        workdir = Path(tmp)
        path = chat_file(workdir / "input.jsonl", args.lines)
        with fake_upstream(workdir) as upstream:
            config = write_config(workdir / "overnight.toml", upstream.url, 64)
            with overnight_server(workdir, config) as server:
                client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="bench", timeout=600)
                upload = client.uploads.upload_file_chunked(
                    file=path, mime_type="application/jsonl", purpose="batch", part_size=64 * 2**20
                )
                assert upload.file is not None
                batch = client.batches.create(
                    input_file_id=upload.file.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                )
                while (batch.request_counts.completed if batch.request_counts else 0) < min(
                    2000, args.lines // 4
                ):
                    time.sleep(0.2)
                    batch = client.batches.retrieve(batch.id)
                timings: dict[str, list[float]] = {
                    "GET /v1/batches/{id}": [],
                    "GET /v1/files?limit=20": [],
                }
                with httpx.Client(base_url=server.url) as http:
                    for _ in range(args.samples):
                        for name, url in (
                            ("GET /v1/batches/{id}", f"/v1/batches/{batch.id}"),
                            ("GET /v1/files?limit=20", "/v1/files?limit=20"),
                        ):
                            started = time.perf_counter()
                            assert http.get(url).status_code == 200
                            timings[name].append(time.perf_counter() - started)
                        time.sleep(0.01)
                running = client.batches.retrieve(batch.id)
                still_running = running.status == "in_progress"
                if still_running:
                    with contextlib.suppress(openai.ConflictError):  # it may just have ended
                        client.batches.cancel(batch.id)
    rows = [
        [
            name,
            len(values),
            f"{1000 * percentile(values, 0.5):.1f}",
            f"{1000 * percentile(values, 0.99):.1f}",
            f"{1000 * max(values):.1f}",
        ]
        for name, values in timings.items()
    ]
    print(
        table(
            f"API latency (ms) while a {args.lines:,}-line batch runs"
            + ("" if still_running else " (it finished before the samples did)"),
            ["request", "samples", "p50", "p99", "max"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
