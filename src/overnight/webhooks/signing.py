"""Standard Webhooks signing (https://www.standardwebhooks.com), which
OpenAI's webhooks and its SDK's `client.webhooks.unwrap` use.

A secret is `whsec_` and the base64 of random bytes; the key is those
bytes. Each attempt sends

    webhook-id: evt_...              the same on every attempt of one event
    webhook-timestamp: 1700000000    this attempt's time, unix seconds
    webhook-signature: v1,<sig> ...  base64 HMAC-SHA256 of "id.timestamp.body"

with one `v1,` signature per secret in use, space separated: during a
rotation both the new and the previous secret sign, so a receiver holding
either accepts the delivery.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"
#: Random bytes in a new secret (Standard Webhooks asks for 24 to 64).
SECRET_BYTES = 32


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign, or None."""
    if not secret.startswith(PREFIX):
        return f"does not start with {PREFIX}"
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return f"is not {PREFIX} followed by base64"
    if not 24 <= len(key) <= 64:
        return "must hold 24 to 64 bytes"
    return None


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secrets_in_use: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            sign(secret, message_id, timestamp, body) for secret in secrets_in_use
        ),
    }
