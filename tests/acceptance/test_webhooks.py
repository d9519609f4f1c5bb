"""Webhooks end to end, in-process: the app and its worker in this event
loop, a real receiver on a loopback port (tests/receivers.py), endpoints
made through the admin API, and every delivery verified as a receiver
would, with the `openai` SDK's `webhooks.unwrap` and `standardwebhooks`.

The receiver is on 127.0.0.1, so these set `webhook_allow_private_targets`
except where the refusal is the point.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from overnight.cli import app as cli
from overnight.testing.fake_upstream import FakeUpstream
from overnight.webhooks.targets import system_resolver

from helpers import chat_lines, fake_model, jsonl
from inprocess import ApiFactory, InProcess
from receivers import Receiver, verified

#: Retries within tenths of a second, so a test sees several.
FAST_RETRIES: dict[str, Any] = {"webhook_first_retry": 0.1, "webhook_max_retry_delay": 0.3}


@pytest.fixture
def receiver() -> Any:
    with Receiver() as running:
        yield running


async def start(start_api: ApiFactory, upstream: FakeUpstream, **settings: Any) -> InProcess:
    return await start_api(
        worker=True,
        models=[fake_model(upstream.url)],
        stop_grace=0,
        **{"webhook_allow_private_targets": True, **FAST_RETRIES, **settings},
    )


async def add_endpoint(http: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    made = await http.post("/admin/webhooks", json={"tenant": "default", "url": url, **body})
    assert made.status_code == 200, made.text
    endpoint: dict[str, Any] = made.json()
    assert endpoint["secret"].startswith("whsec_")
    return endpoint


async def upload(http: httpx.AsyncClient, lines: list[dict[str, Any]] | bytes) -> str:
    data = lines if isinstance(lines, bytes) else jsonl(lines)
    created = await http.post(
        "/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}
    )
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


async def create_batch(
    http: httpx.AsyncClient, lines: list[dict[str, Any]] | bytes, window: str = "24h"
) -> str:
    created = await http.post(
        "/v1/batches",
        json={
            "input_file_id": await upload(http, lines),
            "endpoint": "/v1/chat/completions",
            "completion_window": window,
        },
    )
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


async def pause() -> None:
    """A moment for the sender, between two looks at the delivery log."""
    await asyncio.sleep(0.05)


async def log_of(http: httpx.AsyncClient, endpoint_id: str) -> list[dict[str, Any]]:
    answer = await http.get(f"/admin/webhooks/{endpoint_id}/deliveries", params={"limit": 100})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


async def log_with(
    http: httpx.AsyncClient, endpoint_id: str, lines: int, *, delivered: bool = False
) -> list[dict[str, Any]]:
    """The delivery log once it holds `lines` attempts (the newest a
    success, if `delivered`): a receiver has an answer a moment before the
    sender has logged it."""
    while True:
        log = await log_of(http, endpoint_id)
        if len(log) >= lines and (not delivered or log[0]["succeeded"]):
            return log
        await pause()


async def test_every_way_a_batch_ends_is_announced_signed_and_verifiable(
    start_api: ApiFactory, upstream: FakeUpstream, receiver: Receiver
) -> None:
    api = await start(start_api, upstream, min_completion_window="1s")
    http = api.http()
    endpoint = await add_endpoint(http, receiver.url)
    hanging = chat_lines(1, extra={"x_fake": {"hang": True}})

    completed = await create_batch(http, chat_lines(3))
    failed = await create_batch(http, b'{"custom_id": "a", "not json\n')
    expired = await create_batch(http, hanging, window="1s")
    cancelled = await create_batch(http, hanging)
    assert (await http.post(f"/v1/batches/{cancelled}/cancel")).status_code == 200
    together = await http.post(
        "/together/v1/batches",
        json={
            "input_file_id": await upload(http, chat_lines(1)),
            "endpoint": "/v1/chat/completions",
        },
    )
    assert together.status_code == 201, together.text
    together_id = together.json()["job"]["id"]

    deliveries = await receiver.until(lambda got: len(got) >= 5)
    events = {verified(d, endpoint["secret"])["data"]["id"]: d.event["type"] for d in deliveries}
    assert events == {
        completed: "batch.completed",
        failed: "batch.failed",
        expired: "batch.expired",
        cancelled: "batch.cancelled",
        together_id: "batch.completed",  # in Together's form of the id
    }
    for delivery in deliveries:
        assert delivery.path == "/hook"
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.event["object"] == "event" and delivery.webhook_id == delivery.event["id"]
    log = await log_with(http, endpoint["id"], 5)
    assert len(log) == 5 and all(a["succeeded"] and a["status_code"] == 200 for a in log)
    assert all(a["attempt"] == 1 and a["latency_ms"] >= 0 and a["error"] is None for a in log)
    pages = f"/admin/webhooks/{endpoint['id']}/deliveries"
    first = (await http.get(pages, params={"limit": 3})).json()
    rest = (await http.get(pages, params={"limit": 3, "after": first["data"][-1]["id"]})).json()
    assert (first["has_more"], rest["has_more"]) == (True, False)
    assert first["data"] + rest["data"] == log


async def test_a_receiver_that_is_down_gets_the_event_after_backoff(
    start_api: ApiFactory, upstream: FakeUpstream
) -> None:
    receiver = Receiver()  # not listening yet: connections are refused
    api = await start(start_api, upstream)
    http = api.http()
    endpoint = await add_endpoint(http, receiver.url, event_types=["batch.completed"])
    batch_id = await create_batch(http, chat_lines(2))

    await log_with(http, endpoint["id"], 2)
    receiver.answers = [503, 500]  # up, but failing twice more
    with receiver:
        deliveries = await receiver.until(lambda got: len(got) >= 3)
        log = await log_with(http, endpoint["id"], 5, delivered=True)

    assert {d.webhook_id for d in deliveries} == {deliveries[0].event["id"]}  # one id throughout
    assert [verified(d, endpoint["secret"])["data"]["id"] for d in deliveries] == [batch_id] * 3
    newest_first = [(a["status_code"], a["succeeded"]) for a in log]
    assert newest_first[:3] == [(200, True), (500, False), (503, False)]
    assert all(a["error"].endswith("(ConnectionRefusedError)") for a in log[3:])
    assert [a["attempt"] for a in log] == list(range(len(log), 0, -1))
    gaps = [earlier["at"] - later["at"] for earlier, later in itertools.pairwise(log)]
    assert all(gap >= 0.05 for gap in gaps)  # each retry waited (half its step at least)


async def test_a_rotated_endpoint_signs_with_both_secrets(
    start_api: ApiFactory, upstream: FakeUpstream, receiver: Receiver
) -> None:
    api = await start(start_api, upstream)
    http = api.http()
    endpoint = await add_endpoint(http, receiver.url)
    rotated = await http.post(f"/admin/webhooks/{endpoint['id']}/rotate")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != endpoint["secret"] and rotated.json()["rotating_until"] is not None
    await create_batch(http, chat_lines(1))

    (delivery,) = await receiver.until(lambda got: len(got) >= 1)
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    assert verified(delivery, new_secret) == verified(delivery, endpoint["secret"])
    listed = (await http.get("/admin/webhooks")).json()["data"]
    assert "secret" not in json.dumps(listed)


async def test_private_targets_are_refused_at_delivery_time(
    start_api: ApiFactory, upstream: FakeUpstream, receiver: Receiver
) -> None:
    api = await start(start_api, upstream, webhook_allow_private_targets=False)
    names = {"intranet.test": ["10.1.2.3"], "metadata.test": ["169.254.169.254"]}

    async def resolve(host: str, port: int) -> list[str]:
        return names.get(host) or await system_resolver(host, port)

    assert api.runtime.sender is not None
    api.runtime.sender.resolve = resolve
    http = api.http()
    targets = {
        receiver.url: "refused: 127.0.0.1, a loopback address",
        f"http://localhost:{receiver.port}/hook": "a loopback address",
        "http://10.0.0.1/hook": "refused: 10.0.0.1, a private address",
        "http://169.254.169.254/latest/meta-data": "a cloud metadata address",
        "http://intranet.test/hook": "intranet.test resolves to 10.1.2.3, a private address",
        "http://metadata.test/": "metadata.test resolves to 169.254.169.254, a cloud metadata",
        "http://[::1]:9/hook": "refused: ::1, a loopback address",
        "http://[::ffff:10.0.0.1]/hook": "refused: ::ffff:10.0.0.1, a private address",
    }
    ids = {url: (await add_endpoint(http, url))["id"] for url in targets}
    await create_batch(http, chat_lines(1))

    for url, reason in targets.items():
        log = await log_with(http, ids[url], 2)  # refused, then again on the retry
        assert all(reason in a["error"] and a["status_code"] is None for a in log), (url, log)
    assert receiver.received == []


async def test_the_connection_goes_to_the_checked_address_with_the_names_host(
    start_api: ApiFactory, upstream: FakeUpstream, receiver: Receiver
) -> None:
    """The name below resolves only through this test's resolver: the
    delivery arriving proves the connection used the address resolved (and
    checked) once, not a second lookup of its own."""
    api = await start(start_api, upstream)

    async def resolve(host: str, port: int) -> list[str]:
        assert host == "receiver.test"
        return ["127.0.0.1"]

    assert api.runtime.sender is not None
    api.runtime.sender.resolve = resolve
    http = api.http()
    endpoint = await add_endpoint(http, f"http://receiver.test:{receiver.port}/hook")
    await create_batch(http, chat_lines(1))
    (delivery,) = await receiver.until(lambda got: len(got) >= 1)
    assert delivery.headers["host"] == f"receiver.test:{receiver.port}"
    verified(delivery, endpoint["secret"])


async def test_redirects_are_not_followed_and_slow_receivers_time_out(
    start_api: ApiFactory, upstream: FakeUpstream
) -> None:
    api = await start(start_api, upstream, webhook_timeout=0.3)
    http = api.http()
    with Receiver() as redirecting, Receiver() as elsewhere, Receiver() as slow:
        redirecting.redirect_to = elsewhere.url
        slow.hang = 1.0
        moved = await add_endpoint(http, redirecting.url)
        stuck = await add_endpoint(http, slow.url)
        await create_batch(http, chat_lines(1))
        moved_log = await log_with(http, moved["id"], 2)
        stuck_log = await log_with(http, stuck["id"], 2)
        assert elsewhere.received == []
    assert {(a["status_code"], a["succeeded"]) for a in moved_log} == {(307, False)}
    assert {a["error"] for a in stuck_log} == {"timed out after 0.3 s"}
    assert all(250 <= a["latency_ms"] < 1000 for a in stuck_log)


async def test_an_endpoint_failing_for_long_enough_is_disabled_and_says_so(
    start_api: ApiFactory, upstream: FakeUpstream
) -> None:
    api = await start(start_api, upstream, webhook_disable_after=0.5)
    http = api.http()
    nobody = Receiver()  # never listens
    endpoint = await add_endpoint(http, nobody.url)
    await create_batch(http, chat_lines(1))

    shown = (await http.get(f"/admin/webhooks/{endpoint['id']}")).json()
    while shown["status"] == "enabled":
        await pause()
        shown = (await http.get(f"/admin/webhooks/{endpoint['id']}")).json()
    assert shown["disabled_at"] is not None and shown["failing_since"] is not None
    assert "Disabled after every delivery failed" in shown["disabled_reason"]
    attempts = len(await log_of(http, endpoint["id"]))
    await pause()
    await pause()
    assert len(await log_of(http, endpoint["id"])) == attempts  # no more attempts

    enabled = await http.post(f"/admin/webhooks/{endpoint['id']}/enable")
    assert enabled.json()["status"] == "enabled" and enabled.json()["disabled_reason"] is None
    with nobody:
        (delivery,) = await nobody.until(lambda got: len(got) >= 1)
    verified(delivery, endpoint["secret"])


def test_the_webhooks_commands_print_json_for_scripts(tmp_path: Any) -> None:
    runner = CliRunner()
    where = ["--data-dir", str(tmp_path)]

    def run(*args: str) -> Any:
        result = runner.invoke(cli, [*args, "--json", *where])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    added = run("webhooks", "add", "https://hooks.example.com/x", "--tenant", "acme")
    assert added["object"] == "webhook_endpoint" and added["tenant"] == "acme"
    assert added["secret"].startswith("whsec_") and added["status"] == "enabled"
    assert "batch.completed" in added["event_types"]
    (listed,) = run("webhooks", "list")
    assert listed == {k: v for k, v in added.items() if k != "secret"}
    rotated = run("webhooks", "rotate", added["id"])
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != added["secret"]
    assert rotated["rotating_until"] is not None
    removed = run("webhooks", "remove", added["id"])
    assert removed["id"] == added["id"] and "secret" not in removed
    assert run("webhooks", "list") == []


def test_the_cli_adds_lists_rotates_and_removes_endpoints(tmp_path: Any) -> None:
    runner = CliRunner()
    where = ["--data-dir", str(tmp_path)]
    added = runner.invoke(
        cli,
        ["webhooks", "add", "https://hooks.example.com/x", "--tenant", "acme",
         "--event", "batch.completed", "--event", "batch.failed", *where],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    secret = added.stdout.strip()
    assert secret.startswith("whsec_")
    endpoint_id = added.stderr.split()[1]
    # One unwrapped line, however narrow the terminal: a script may grep it.
    assert "keep the signing secret now, it is not shown again:" in added.stderr
    # A tenant nobody has used yet may be a misspelling: said, not refused.
    assert "no tenant acme is known here yet" in added.stderr
    assert runner.invoke(cli, ["keys", "create", "--tenant", "acme", *where]).exit_code == 0
    again = runner.invoke(
        cli, ["webhooks", "add", "https://hooks.example.com/y", "--tenant", "acme", *where]
    )
    assert again.exit_code == 0 and "known here" not in again.stderr, again.output

    listed = runner.invoke(cli, ["webhooks", "list", *where])
    assert listed.exit_code == 0, listed.output
    assert endpoint_id in listed.stdout and "completed,failed" in listed.stdout
    assert secret not in listed.output and "whsec_" not in listed.output

    rotated = runner.invoke(cli, ["webhooks", "rotate", endpoint_id, *where])
    assert rotated.exit_code == 0, rotated.output
    assert rotated.stdout.strip().startswith("whsec_") and rotated.stdout.strip() != secret

    refused = runner.invoke(cli, ["webhooks", "add", "ftp://x", "--tenant", "acme", *where])
    assert refused.exit_code == 2 and "http:// or https://" in refused.output
    removed = runner.invoke(cli, ["webhooks", "remove", endpoint_id, *where])
    assert removed.exit_code == 0 and endpoint_id in removed.stdout
    gone = runner.invoke(cli, ["webhooks", "remove", endpoint_id, *where])
    assert gone.exit_code == 2 and "No webhook endpoint" in gone.output
    assert Counter(runner.invoke(cli, ["webhooks", "list", *where]).stdout.split())["acme"] == 1
