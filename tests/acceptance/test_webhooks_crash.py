"""`kill -9` of `overnight serve` while 100 batches end: after a restart on
the same data directory, every batch's event reaches the receiver. None is
lost, because each is written in the transaction that ends its batch; some
may come twice (sent, then killed before the attempt was recorded), always
under the same `webhook-id`, which is what receivers dedupe on.

A real server process, since the process dying is the point; one-line
batches against the fake upstream, so that 100 of them end in seconds
(the kill comes after a fifth of their events, so most are still to come).
The endpoint comes from the config file (`[[webhooks]]`).
"""

from __future__ import annotations

import base64
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from overnight.testing.fake_upstream import FakeUpstream

from helpers import ServerProcess, chat_lines, fake_model, jsonl, write_config
from receivers import Receiver, verified

BATCHES = 100
CLIENTS = 4
SECRET = "whsec_" + base64.b64encode(b"overnight-crash-test-secret-0123").decode()


def create_batches(url: str) -> set[str]:
    """BATCHES one-line batches over one file, from a few clients at once
    (the server overlaps their database waits)."""
    with httpx.Client(base_url=f"{url}/v1", timeout=30) as http:
        file_id = http.post(
            "/files", files={"file": ("in.jsonl", jsonl(chat_lines(1)))}, data={"purpose": "batch"}
        ).json()["id"]

    def create(count: int) -> list[str]:
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        with httpx.Client(base_url=f"{url}/v1", timeout=30) as http:
            return [http.post("/batches", json=body).json()["id"] for _ in range(count)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        created = pool.map(create, [BATCHES // CLIENTS] * CLIENTS)
        return {batch_id for ids in created for batch_id in ids}


def test_kill_9_while_batches_end_loses_no_event(tmp_path: Path) -> None:
    with FakeUpstream() as upstream, Receiver() as receiver:
        config = write_config(
            tmp_path / "config.toml",
            [fake_model(upstream.url)],
            rate_limit_per_second=0,
            webhook_allow_private_targets=True,
            webhook_first_retry=0.2,
            webhook_max_retry_delay=1.0,
        )
        with config.open("a") as toml:
            toml.write(f'\n[[webhooks]]\ntenant = "default"\nurl = "{receiver.url}"\n')
            toml.write(f'secret = "{SECRET}"\n')
        data = tmp_path / "data"
        server = ServerProcess(data, config=config).start()
        try:
            batch_ids = create_batches(server.url)
            receiver.wait_for(lambda got: len(got) >= BATCHES // 5, 60)
            server.kill()
            at_kill = len(receiver.batch_ids())
            server = ServerProcess(data, config=config).start()
            receiver.wait_for(lambda got: {r.event["data"]["id"] for r in got} >= batch_ids, 90)
        finally:
            server.stop()

    deliveries = receiver.received
    ids_per_batch: dict[str, set[str]] = defaultdict(set)
    for delivery in deliveries:
        event = verified(delivery, SECRET)
        assert event["type"] == "batch.completed"
        ids_per_batch[event["data"]["id"]].add(delivery.webhook_id)
    print(
        f"{at_kill} of {BATCHES} batches announced when killed; "
        f"{len(deliveries)} deliveries for {len(ids_per_batch)} batches"
    )
    assert at_kill < BATCHES, "every event was out before the kill: it tested nothing"
    assert set(ids_per_batch) == batch_ids
    assert all(len(ids) == 1 for ids in ids_per_batch.values())  # a repeat keeps its id
