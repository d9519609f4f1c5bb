"""Benchmark: an Anthropic Message Batch create of 100,000 requests, ~250 MB.

The create carries every request in its body. overnight parses it as a
stream (ijson's C parser), checks each request and writes it to storage as
it arrives, so the API process's memory should not grow with the body.
This writes such a body to disk, starts a fake upstream and `overnight
serve`, sends the body once (`x-api-key`, as the SDK does), and samples
the resident memory (RSS) of the API process every 20 ms while it does.
Then it lets the batch run (validation, the requests through translation
to the fake upstream's chat completions, finalisation) and streams the
results, sampling again. Target: the API process under 300 MB throughout,
and the create answered in seconds.

    python bench/message_batches.py                       # 100,000 requests, ~250 MB
    python bench/message_batches.py --requests 200        # smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from _common import fake_upstream, overnight_server, table, write_config
from memory import PeakSampler


def write_body(path: Path, requests: int, request_bytes: int) -> int:
    """`{"requests": [...]}` with `requests` requests of about
    `request_bytes` bytes each; its size."""
    pad = "x" * max(0, request_bytes - 190)
    with path.open("wb") as handle:
        handle.write(b'{"requests": [')
        for i in range(requests):
            request = {
                "custom_id": f"r-{i}",
                "params": {
                    "model": "bench-model",
                    "max_tokens": 8,
                    "temperature": 0.5,
                    "messages": [{"role": "user", "content": f"hi {i} {pad}"}],
                },
            }
            if i:
                handle.write(b", ")
            handle.write(orjson.dumps(request))
        handle.write(b"]}")
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--request-bytes", type=int, default=2600)
    parser.add_argument("--skip-run", action="store_true", help="create only")
    args = parser.parse_args()

    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:
        workdir = Path(tmp)
        body = workdir / "body.json"
        size = write_body(body, args.requests, args.request_bytes)
        with fake_upstream(workdir) as upstream:
            config = write_config(workdir / "overnight.toml", upstream.url, 64)
            with overnight_server(workdir, config) as server:
                sampler = PeakSampler(server, interval=0.02)
                sampler.start()
                time.sleep(0.5)
                idle = sampler.take()

                def phase(name: str, seconds: float) -> None:
                    peaks = sampler.take()
                    rows.append(
                        [
                            name,
                            f"{seconds:.1f}",
                            f"{peaks.get('api', 0) / 2**20:.0f}",
                            f"{peaks.get('worker', 0) / 2**20:.0f}",
                        ]
                    )

                rows.append(
                    [
                        "idle",
                        "",
                        f"{idle.get('api', 0) / 2**20:.0f}",
                        f"{idle.get('worker', 0) / 2**20:.0f}",
                    ]
                )
                client = httpx.Client(
                    base_url=f"{server.url}/anthropic/v1",
                    headers={"x-api-key": "bench", "anthropic-version": "2023-06-01"},
                    timeout=3600,
                )
                started = time.perf_counter()
                with body.open("rb") as handle:
                    answer = client.post(
                        "/messages/batches",
                        content=handle,
                        headers={"content-type": "application/json"},
                    )
                assert answer.status_code == 200, answer.text
                batch = answer.json()
                assert batch["request_counts"]["processing"] == args.requests, batch
                phase(
                    f"create ({args.requests:,} requests, {size / 2**20:.0f} MiB)",
                    time.perf_counter() - started,
                )
                if not args.skip_run:
                    started = time.perf_counter()
                    while batch["processing_status"] != "ended":
                        time.sleep(0.5)
                        batch = client.get(f"/messages/batches/{batch['id']}").json()
                    counts = batch["request_counts"]
                    assert counts["succeeded"] == args.requests, counts
                    phase("validate + run + finalise", time.perf_counter() - started)

                    started = time.perf_counter()
                    lines = 0
                    with client.stream("GET", batch["results_url"]) as results:
                        for line in results.iter_lines():
                            lines += bool(line)
                    assert lines == args.requests, lines
                    phase(f"results ({lines:,} lines)", time.perf_counter() - started)
                sampler.running = False
                client.close()
    print(
        table(
            "Message Batch create: seconds and peak resident memory (MiB), by phase",
            ["phase", "seconds", "API process", "worker process"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
