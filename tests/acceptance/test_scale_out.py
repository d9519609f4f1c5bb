"""Scale out: two API replicas and three workers, on PostgreSQL and S3.

A worker is killed with `kill -9` midway and another is added; every line
still ends in the results exactly once, both replicas show the same
progress, and the model's max_concurrency holds across all workers.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import openai
import pytest

from overnight.testing.fake_upstream import FakeUpstream

from backends import Backend, Postgres
from helpers import (
    ServerProcess,
    WorkerProcess,
    chat_lines,
    fake_model,
    jsonl,
    read_jsonl,
    write_config,
)

pytestmark = pytest.mark.slow

#: 40 chunks, so that the kill at a quarter catches chunks running and leaves
#: many for the other workers and the one added later.
LINES = 10_000
CHUNK_LINES = 250
MAX_CONCURRENCY = 48


def test_two_replicas_and_three_workers_survive_a_killed_worker(
    tmp_path: Path, postgres: Postgres, s3_endpoint: str
) -> None:
    lines = chat_lines(LINES)
    for line in lines:
        line["body"]["x_fake"] = {"tag": line["custom_id"]}
    backend = Backend("postgres+s3", postgres=postgres, s3_endpoint=s3_endpoint)
    fast = {
        "OVERNIGHT_HEARTBEAT_INTERVAL": "0.5",
        "OVERNIGHT_LEASE_TTL": "3",
        "OVERNIGHT_PART_UPLOAD_INTERVAL": "1",
    }

    with FakeUpstream(latency=0.01) as upstream:
        config = write_config(
            tmp_path / "config.toml",
            [fake_model(upstream.url, max_concurrency=MAX_CONCURRENCY)],
            chunk_lines=CHUNK_LINES,
            **backend.settings(),
        )
        replicas = [
            ServerProcess(tmp_path / f"api-{i}", config=config, args=["--no-worker"], env=fast)
            for i in range(2)
        ]
        workers = [
            WorkerProcess(tmp_path / f"worker-{i}", config=config, env=fast) for i in range(3)
        ]
        try:
            for process in [*replicas, *workers]:
                process.start()
            first, second = (
                openai.OpenAI(base_url=f"{r.url}/v1", api_key="k", max_retries=2) for r in replicas
            )
            file = first.files.create(file=("big.jsonl", jsonl(lines)), purpose="batch")
            batch_id = second.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id

            views: list[tuple[int, int]] = []
            killed = added = False
            deadline = time.monotonic() + 240
            while True:
                assert time.monotonic() < deadline, views[-5:]
                a, b = first.batches.retrieve(batch_id), second.batches.retrieve(batch_id)
                if a.status in ("completed", "failed") and b.status == a.status:
                    break
                if a.status == "in_progress" and b.status == "in_progress":
                    views.append((a.request_counts.completed, b.request_counts.completed))  # type: ignore[union-attr]
                    done = views[-1][0]
                    if not killed and done > LINES * 0.25:
                        workers[0].kill()
                        killed = True
                    elif killed and not added and done > LINES * 0.4:
                        workers.append(
                            WorkerProcess(tmp_path / "worker-3", config=config, env=fast).start()
                        )
                        added = True
                time.sleep(0.1)

            batch = first.batches.retrieve(batch_id)
            assert second.batches.retrieve(batch_id).model_dump() == batch.model_dump()
            output = read_jsonl(first.files.content(batch.output_file_id).text)
            assert second.files.content(batch.output_file_id).text.count("\n") == len(output)
            stats = upstream.stats()
            first.close()
            second.close()
        finally:
            for process in [*replicas, *workers]:
                process.stop()

    assert killed and added, views
    assert batch.status == "completed"
    assert Counter(row["custom_id"] for row in output) == Counter(
        line["custom_id"] for line in lines
    )
    assert batch.request_counts.model_dump() == {"total": LINES, "completed": LINES, "failed": 0}  # type: ignore[union-attr]
    # Both replicas show the same live progress: each pair of reads (one per
    # replica, a moment apart) agrees up to what ran in between. (After the
    # kill, the count may step back by what the dead worker had not yet
    # copied to the bucket: those lines run again; docs/operations.md.)
    assert sum(1 for a, _ in views if 0 < a < LINES) >= 5, views
    assert all(abs(b - a) <= LINES * 0.05 for a, b in views), views
    # Every line reached the model; the killed worker's unfinished chunks ran again.
    assert set(stats["by_tag"]) == {line["custom_id"] for line in lines}
    print(
        f"re-sent after the kill: {sum(stats['by_tag'].values()) - LINES}; peak in flight {stats['max_in_flight']}"
    )
    # max_concurrency is global: split between the live workers.
    assert stats["max_in_flight"] <= MAX_CONCURRENCY
