"""`kill -9` in the middle of a Message Batch, through the real `anthropic`
SDK against a real `overnight serve`: restarted on the same data
directory, the batch ends with one result per request, none lost, none
twice. The fake upstream counts each request's sends by its tag (the
requests pass through to its /v1/messages, tag and all)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from overnight.testing.fake_upstream import FakeUpstream

from helpers import ServerProcess, fake_model, message_requests, write_config

# `anthropic` is imported in the tests that use it: every pytest worker
# collects this file, and the import costs 2.2 CPU-s.

REQUESTS = 3000
CHUNK_LINES = 200
FLUSH_LINES = 20
CONCURRENCY = 16


def test_a_message_batch_killed_mid_run_ends_with_each_result_once(tmp_path: Path) -> None:
    import anthropic

    requests = message_requests(REQUESTS, "fake-model", "k")
    for request in requests:
        request["params"]["x_fake"] = {"tag": request["custom_id"]}

    with FakeUpstream(latency=0.01) as upstream:
        config = write_config(
            tmp_path / "config.toml",
            [
                fake_model(
                    upstream.url,
                    max_concurrency=CONCURRENCY,
                    adaptive=False,
                    apis=["chat", "messages"],
                )
            ],
            chunk_lines=CHUNK_LINES,
            flush_lines=FLUSH_LINES,
            # The worker in the API process: one process to start, twice.
            worker_processes=0,
        )
        data = tmp_path / "data"
        server = ServerProcess(data, config=config).start()
        port = server.port
        client = anthropic.Anthropic(base_url=f"{server.url}/anthropic", api_key="k", max_retries=3)
        batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]

        # Killed once results are being written, well before the end.
        counts = client.messages.batches.retrieve(batch.id).request_counts
        while counts.succeeded < CHUNK_LINES // 2:
            time.sleep(0.05)
            counts = client.messages.batches.retrieve(batch.id).request_counts
        server.kill()
        killed_at = counts.succeeded
        server = ServerProcess(data, config=config)
        server.port = port
        server.start()

        deadline = time.monotonic() + 120
        shown = client.messages.batches.retrieve(batch.id)
        while shown.processing_status != "ended":
            assert time.monotonic() < deadline, shown
            time.sleep(0.1)
            shown = client.messages.batches.retrieve(batch.id)
        results = list(client.messages.batches.results(batch.id))
        sends = upstream.stats()["by_tag"]
        client.close()
        server.stop()

    assert killed_at < REQUESTS // 2, f"killed late, at {killed_at} results"
    assert shown.request_counts.succeeded == REQUESTS, shown.request_counts
    seen = Counter(r.custom_id for r in results)
    assert len(seen) == REQUESTS and set(seen.values()) == {1}
    assert {r.result.type for r in results} == {"succeeded"}
    assert set(sends) == {r["custom_id"] for r in requests}
    resent = sum(sends.values()) - REQUESTS
    print(f"killed at {killed_at} results; {resent} requests sent again")
    # At most the unwritten results and the requests in flight.
    assert resent <= 2 * FLUSH_LINES + CONCURRENCY
