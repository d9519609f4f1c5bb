"""Idempotency keys: what a create sent with an `Idempotency-Key` left behind,
and what a second request with the same key gets.

A key belongs to one tenant. The first request with it claims it (a row
with no answer yet), runs, and on success stores its answer; a repeat with
the same route and the same request hash gets that answer again, byte for
byte. A repeat that differs is refused: the key names one request, not a
slot to reuse. A failed request releases its claim, so that a retry runs
again rather than repeating the failure.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from overnight.types import TenantId

#: How long an answer is kept (and a key stays taken), from the first request.
KEPT_FOR = 24 * 3600
#: A claim with no answer after this long belongs to a process that died
#: mid-request; the key may then be claimed again. Generous, because a large
#: upload may legitimately take long, and a wait is better than a duplicate.
ABANDONED_AFTER = 3600
#: Longest key accepted (Stripe's limit; the SDKs send about 60 characters).
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    tenant: TenantId
    key: str
    #: "POST /v1/batches": a key is bound to the method and path it came with.
    route: str
    created_at: int
    #: SHA-256 (hex) of the request, see `api/idempotency.py`; None while running.
    request_hash: str | None = None
    #: The stored answer; None while the first request is still running.
    status_code: int | None = None
    body: bytes | None = None
    #: The id of the object the first request made, for operators.
    object_id: str | None = None

    @property
    def answered(self) -> bool:
        return self.status_code is not None


class Verdict(enum.Enum):
    """What a request finds when its key is already taken."""

    REPLAY = "replay"  # the same request, answered: send that answer again
    REUSED = "reused"  # another request under the same key: refuse (409)
    IN_USE = "in_use"  # the first request is still running: try again shortly


def verdict(record: IdempotencyRecord, route: str, request_hash: str | None) -> Verdict:
    """`request_hash` None: the request's body could not be hashed in full
    (it was larger than any request that could have succeeded)."""
    if record.route != route:
        return Verdict.REUSED
    if not record.answered:
        return Verdict.IN_USE
    if request_hash is None or request_hash != record.request_hash:
        return Verdict.REUSED
    return Verdict.REPLAY


def key_problem(key: str) -> str | None:
    """Why `key` cannot be an idempotency key, or None if it can."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        return f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters."
    if not (key.isascii() and key.isprintable()):
        return "Idempotency-Key must be printable ASCII."
    return None
