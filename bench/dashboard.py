"""Benchmark: every dashboard page's time on the server, with many batches
stored and a big batch running.

Before the server starts, 10,000 batches are written into its database
through the store (cancelled before they ran: one file, no bytes to run);
then a batch of --lines lines (1M by default) is uploaded and, once it is
dispatching against the instant fake upstream, every page is fetched
--samples times, round-robin. The figure is the page's own time on the
server, from its `Server-Timing` header (what the handler took, session
lookup included), and the CPU time the API process spent meanwhile (its
only work then: the worker runs in its own process), which other
processes' load does not inflate; the round trip seen by the client is
shown beside them, and the API's own GET of the batch, timed in the same
loop, shows what the machine's load adds to any answer.
Target: p99 under 100 ms.

    python bench/dashboard.py
    python bench/dashboard.py --batches 500 --lines 5000 --samples 5   # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).parent))
from _common import chat_file, fake_upstream, overnight_server, table, write_config
from overnight import _ids
from overnight.domain.batch import Batch
from overnight.domain.files import FilePurpose, FileRecord
from overnight.domain.status import BatchStatus
from overnight.settings import Settings
from overnight.store import open_store
from overnight.tenants import LOCAL_TENANT
from overnight.types import FileId


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def seed(data_dir: Path, count: int) -> list[str]:
    """`count` ended batches of the local tenant, through the store; their ids."""
    store = await open_store(Settings(data_dir=data_dir).resolved_database_url)
    now = time.time()
    record = FileRecord(
        id=FileId(_ids.new_file_id()),
        tenant=LOCAL_TENANT,
        filename="seed.jsonl",
        purpose=FilePurpose.BATCH,
        bytes=0,
        created_at=int(now),
        sha256="0" * 64,
        blob_key="files/seed",
        line_count=0,
    )
    await store.insert_file(record, int(now * 1e6))
    ids: list[str] = []

    async def add(i: int) -> None:
        batch = Batch(
            id=_ids.new_batch_id(),
            tenant=LOCAL_TENANT,
            endpoint="/v1/chat/completions",
            input_file_id=record.id,
            completion_window="24h",
            status=BatchStatus.VALIDATING,
            created_at=int(now),
            expires_at=int(now) + 86400,
            model="bench-model",
        )
        await store.insert_batch(batch, int(now * 1e6) + i)
        await store.request_cancel(None, batch.id, int(now))
        ids.append(batch.id)

    # Many at once: each is two short transactions, queued on the one writer.
    for start in range(0, count, 100):
        await asyncio.gather(*(add(i) for i in range(start, min(count, start + 100))))
    await store.close()
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        (workdir / "data").mkdir()
        stored = asyncio.run(seed(workdir / "data", args.batches))
        seeded_in = time.perf_counter() - started
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
                deep = stored[len(stored) // 2]
                pages = {
                    "batches": "/ui/batches",
                    "batches (live part)": "/ui/batches",
                    "batches ?status=in_progress": "/ui/batches?status=in_progress",
                    "batches ?status=cancelled": "/ui/batches?status=cancelled",
                    "batches ?model=bench-model": "/ui/batches?model=bench-model",
                    "batches, a page deep in the list": f"/ui/batches?after={deep}",
                    "batch (running)": f"/ui/batches/{batch.id}",
                    "batch (ended)": f"/ui/batches/{stored[0]}",
                    "files": "/ui/files",
                    "models": "/ui/models",
                    "workers": "/ui/workers",
                    "tenants": "/ui/tenants",
                    # Not a page: the API's own read, timed in the same loop,
                    # shows what the machine's load adds to any answer.
                    "(API) GET /v1/batches/{id}": f"/v1/batches/{batch.id}",
                }
                server_ms: dict[str, list[float]] = {name: [] for name in pages}
                round_ms: dict[str, list[float]] = {name: [] for name in pages}
                cpu_ms: dict[str, list[float]] = {name: [] for name in pages}
                with httpx.Client(base_url=server.url) as http:
                    http.get("/ui/batches")  # the local session's cookie
                    for _ in range(args.samples):
                        for name, url in pages.items():
                            headers = {"x-overnight-live": "1"} if "live" in name else {}
                            sent = time.perf_counter()
                            answer = http.get(url, headers=headers)
                            round_ms[name].append(1000 * (time.perf_counter() - sent))
                            assert answer.status_code == 200, (url, answer.status_code)
                            timing = dict(
                                re.findall(
                                    r"(\w+);dur=([\d.]+)", answer.headers.get("server-timing", "")
                                )
                            )
                            if timing:
                                server_ms[name].append(float(timing["app"]))
                                cpu_ms[name].append(float(timing["cpu"]))
                        time.sleep(0.01)
                running = client.batches.retrieve(batch.id)
                still_running = running.status == "in_progress"
                done = running.request_counts.completed if running.request_counts else 0
                if still_running:
                    with contextlib.suppress(openai.ConflictError):  # it may just have ended
                        client.batches.cancel(batch.id)

    def figures(values: list[float]) -> list[str]:
        if not values:
            return ["-", "-", "-"]
        return [
            f"{percentile(values, 0.5):.1f}",
            f"{percentile(values, 0.99):.1f}",
            f"{max(values):.1f}",
        ]

    rows = [
        [
            name,
            len(round_ms[name]),
            *figures(server_ms[name]),
            *figures(cpu_ms[name])[:2],
            f"{percentile(round_ms[name], 0.5):.1f}",
            f"{percentile(round_ms[name], 0.99):.1f}",
        ]
        for name in pages
    ]
    print(
        table(
            f"Dashboard pages, server time (ms), {args.batches:,} batches stored (seeded in "
            f"{seeded_in:.0f} s), a {args.lines:,}-line batch "
            + (
                f"running ({done:,} lines done at the end)" if still_running else "(it ended first)"
            ),
            [
                "page",
                "samples",
                "p50",
                "p99",
                "max",
                "CPU p50",
                "CPU p99",
                "round trip p50",
                "round trip p99",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
