"""Results while a batch runs, through the openai SDK's own `get` (the
routes are overnight's, so the SDK has no method for them): a tail with the
`after` cursor reads every final line once, on both storage backends (parts
in local staging, in the blob store, on S3). In-process apps, a fake
upstream whose knobs make some lines fail (status 400: not retried)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import openai
import pytest

from overnight.testing.fake_upstream import FakeUpstream

from helpers import chat_lines, fake_model, read_jsonl, wait_for_batch
from inprocess import AppFactory
from results_api import INCOMPLETE, NEXT_AFTER, file_lines, ids_of, read, retry, submit


class Tail:
    """Reads a batch's output and errors after the last cursors."""

    def __init__(self, client: openai.OpenAI, batch_id: str) -> None:
        self.client = client
        self.batch_id = batch_id
        self.got: dict[str, list[str]] = {"output": [], "errors": []}
        self.after: dict[str, dict[str, str]] = {"output": {}, "errors": {}}
        self.while_running = 0

    def read_once(self) -> bool:
        """One read of each kind; whether the batch may add more."""
        running = False
        for kind in self.got:
            answer = read(self.client, self.batch_id, kind, **self.after[kind])
            lines = answer.text.splitlines()
            self.got[kind] += lines
            self.after[kind] = {"after": answer.headers[NEXT_AFTER]}
            if answer.headers[INCOMPLETE] == "true":
                running = True
                self.while_running += len(lines)
        return running

    def until(self, done: Callable[[], bool], within: float = 60) -> None:
        deadline = time.monotonic() + within
        while not done():
            assert time.monotonic() < deadline, "the tail did not get there"
            time.sleep(0.02)


def test_tailing_a_running_batch_reads_every_final_line_once(start_app: AppFactory) -> None:
    lines = chat_lines(240, prefix="tail")
    # One request never gets an answer: the batch runs until it is cancelled,
    # so every other line is read while it runs, however slow the machine.
    lines[-1]["body"]["x_fake"] = {"hang": True}
    with FakeUpstream(latency=0.01, error_rate=0.25, error_status=400, seed=3) as upstream:
        model = fake_model(upstream.url, max_concurrency=4, adaptive=False)
        client = start_app([model], chunk_lines=10, stop_grace=0.2).openai()
        batch = submit(client, lines)
        tail = Tail(client, batch.id)
        tail.until(lambda: tail.read_once() and tail.while_running == 239)
        client.batches.cancel(batch.id)
        tail.until(lambda: not tail.read_once())
        ended = client.batches.retrieve(batch.id)
        output = file_lines(client, ended.output_file_id)
        errors = file_lines(client, ended.error_file_id)
        whole = read(client, batch.id, "output")
        past_the_end = read(client, batch.id, "errors", **tail.after["errors"])

    assert ended.status == "cancelled"
    assert 0 < ended.request_counts.failed < 240
    got = tail.got
    assert Counter(got["output"]) == Counter(output)
    assert Counter(got["errors"]) == Counter(errors)
    assert sorted(ids_of(got["output"] + got["errors"])) == sorted(
        line["custom_id"] for line in lines
    )
    assert read_jsonl(got["errors"][-1])[0]["error"]["code"] == "batch_cancelled"
    # Once ended: one read without a cursor is the output file byte for byte,
    # and the last cursor has nothing more.
    assert whole.headers[INCOMPLETE] == "false"
    assert whole.content == client.files.content(ended.output_file_id).content
    assert past_the_end.content == b""


def test_another_tenants_batch_and_a_bad_cursor(start_app: AppFactory) -> None:
    tenants = [
        {"name": "alpha", "api_keys": ["key-alpha"]},
        {"name": "beta", "api_keys": ["key-beta"]},
    ]
    with FakeUpstream() as upstream:
        app = start_app([fake_model(upstream.url)], tenants=tenants)
        alpha, beta = app.openai("key-alpha"), app.openai("key-beta")
        batch = wait_for_batch(alpha, submit(alpha, chat_lines(3)).id)
        other = wait_for_batch(alpha, submit(alpha, chat_lines(3)).id)
        cursor = read(alpha, other.id, "output").headers[NEXT_AFTER]
        for kind in ("output", "errors"):
            with pytest.raises(openai.NotFoundError) as theirs:
                read(beta, batch.id, kind)
            with pytest.raises(openai.NotFoundError) as nobody:
                read(beta, "batch_0123456789abcdef0123456789abcdef", kind)
            assert theirs.value.code == nobody.value.code == "batch_not_found"
        with pytest.raises(openai.NotFoundError):
            retry(beta, batch.id)
        with pytest.raises(openai.BadRequestError) as foreign:
            read(alpha, batch.id, "output", after=cursor)  # another batch's cursor
        with pytest.raises(openai.BadRequestError) as junk:
            read(alpha, batch.id, "errors", after="not-a-cursor")
    assert foreign.value.code == junk.value.code == "invalid_cursor"
