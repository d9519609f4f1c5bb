"""The pure rules of webhooks: signatures (checked against the Standard
Webhooks test vector and by two real verifiers), secrets, which addresses
a delivery may go to, the retry schedule, and what an endpoint URL may be."""

from __future__ import annotations

import ipaddress
import json
import random
import time

import openai
import pytest
import standardwebhooks

from overnight.domain.webhooks import RetryPolicy, url_problem
from overnight.webhooks.signing import headers, new_secret, secret_problem, sign
from overnight.webhooks.targets import TargetRefused, address_problem, resolve_target

BODY = json.dumps({"id": "evt_1", "object": "event", "type": "batch.completed",
                   "created_at": 1, "data": {"id": "batch_1"}}).encode()  # fmt: skip


def test_a_signature_matches_the_standard_webhooks_test_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signed = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signed == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_during_a_rotation_each_secret_alone_verifies_and_a_tampered_body_fails() -> None:
    old, new = new_secret(), new_secret()
    sent = headers([new, old], "evt_1", int(time.time()), BODY)
    assert len(sent["webhook-signature"].split(" ")) == 2
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    for secret in (old, new):
        assert client.webhooks.unwrap(BODY, sent, secret=secret).type == "batch.completed"
        assert standardwebhooks.Webhook(secret).verify(BODY, sent)["data"] == {"id": "batch_1"}
    tampered = BODY.replace(b"batch_1", b"batch_2")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(tampered, sent, secret=new)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(BODY, sent)


def test_secrets_are_whsec_and_24_to_64_bytes_of_base64() -> None:
    assert secret_problem(new_secret()) is None
    assert new_secret() != new_secret()
    assert secret_problem("sk_" + "A" * 44) == "does not start with whsec_"
    assert secret_problem("whsec_not base64!") == "is not whsec_ followed by base64"
    assert secret_problem("whsec_QUJD") == "must hold 24 to 64 bytes"


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("2002:a00:1::", "a private address"),  # 6to4 around 10.0.0.1
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("169.254.10.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fd12:3456::1", "a unique-local address"),
        ("0.0.0.0", "a private address"),
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
        ("224.0.0.1", "a reserved address"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_which_addresses_a_delivery_may_go_to(address: str, kind: str | None) -> None:
    assert address_problem(ipaddress.ip_address(address)) == kind


async def test_a_name_is_refused_if_any_address_it_resolves_to_is() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("mixed.test", 443)
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(TargetRefused, match=r"mixed.test resolves to 10.0.0.7, a private"):
        await resolve_target("https://mixed.test/x", allow_private=False, resolve=resolve)
    allowed = await resolve_target("https://mixed.test/x", allow_private=True, resolve=resolve)
    assert (allowed.host, allowed.port, allowed.address) == ("mixed.test", 443, "93.184.216.34")


def test_retries_back_off_exponentially_with_jitter_within_the_window() -> None:
    policy = RetryPolicy(first_delay=5, max_delay=3600, window=86_400)
    assert [policy.step(n) for n in (1, 2, 3, 4, 12, 13, 60)] == [
        5, 10, 20, 40, 3600, 3600, 3600,
    ]  # fmt: skip
    rng = random.Random(7)
    waits = [policy.next_attempt_at(3, 0, 100, rng) for _ in range(200)]
    assert all(w is not None and 110 <= w <= 120 for w in waits)
    assert len({round(w or 0, 3) for w in waits}) > 100  # jittered, not all at once
    assert policy.next_attempt_at(12, 0, 86_000, rng) == 86_400  # one last try at the close
    assert policy.next_attempt_at(13, 0, 86_400, rng) is None  # then it fails for good

    attempts, now = 1, 0.0
    while (later := policy.next_attempt_at(attempts, 0, now, random.Random(attempts))) is not None:
        attempts, now = attempts + 1, later
    assert 20 <= attempts <= 50 and now == 86_400  # about a day of tries, not thousands


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://hooks.example.com/in?team=a", None),
        ("http://10.0.0.1:8080/x", None),  # where it points is checked when sending
        ("ftp://example.com/", "is not an http:// or https:// URL"),
        ("https:///nohost", "names no host"),
        (
            "https://user:pw@example.com/",
            "carries credentials; put them in the path or query instead",
        ),
        ("https://example.com/#frag", "has a fragment"),
        ("https://example.com/a b", "must be printable ASCII"),
        ("https://exämple.com/", "must be printable ASCII"),
        ("https://example.com:99999/", "is not a valid URL"),
    ],
)
def test_what_an_endpoint_url_may_be(url: str, problem: str | None) -> None:
    found = url_problem(url)
    assert found == problem or (
        problem is not None and found is not None and found.startswith(problem)
    )
