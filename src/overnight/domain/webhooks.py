"""Webhooks: what tells a tenant's systems that a batch ended.

A batch that reaches a terminal status is an event (`batch.completed`,
`batch.failed`, `batch.expired`, `batch.cancelled`) in OpenAI's shape:

    {"id": "evt_...", "object": "event", "type": "batch.completed",
     "created_at": 1700000000, "data": {"id": "batch_..."}}

Each endpoint of the batch's tenant that listens for the event type gets one
`Delivery` of it, written in the same transaction as the status change (an
outbox), and retried with backoff until it is answered 2xx or its retry
window closes. The event id is the `webhook-id` of every attempt, so a
receiver can drop the duplicates that at-least-once delivery brings.

Everything here is pure: the records, the event's body, the retry schedule
and the rule that disables an endpoint failing for days.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from overnight import _json
from overnight.domain.status import BatchStatus
from overnight.types import TenantId

#: Longest endpoint URL accepted.
MAX_URL_LENGTH = 2048


class EventType(StrEnum):
    COMPLETED = "batch.completed"
    FAILED = "batch.failed"
    EXPIRED = "batch.expired"
    CANCELLED = "batch.cancelled"


EVENT_TYPES: tuple[EventType, ...] = tuple(EventType)

_EVENT_OF_STATUS = {
    BatchStatus.COMPLETED: EventType.COMPLETED,
    BatchStatus.FAILED: EventType.FAILED,
    BatchStatus.EXPIRED: EventType.EXPIRED,
    BatchStatus.CANCELLED: EventType.CANCELLED,
}


def event_of(status: BatchStatus) -> EventType:
    """The event a batch reaching `status` (a terminal one) sends."""
    return _EVENT_OF_STATUS[status]


def event_body(event_id: str, event_type: EventType, created_at: int, batch_id: str) -> bytes:
    """The exact bytes every attempt of this event sends and signs."""
    return _json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type.value,
            "created_at": created_at,
            "data": {"id": batch_id},
        }
    )


class EndpointSource(StrEnum):
    #: Made through the admin API or `overnight webhooks add`.
    API = "api"
    #: Listed in the config file's `[[webhooks]]`; changed only there.
    CONFIG = "config"


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where one tenant's events go. Never carries its signing secret: that
    is shown once, when made or rotated, and otherwise read only to sign."""

    id: str
    tenant: TenantId
    url: str
    event_types: tuple[EventType, ...]
    created_at: int
    source: EndpointSource = EndpointSource.API
    #: Until when the secret before the last rotation still signs (both
    #: signatures are sent), or None.
    rotating_until: int | None = None
    #: When the current run of failed attempts began; None while it succeeds.
    failing_since: int | None = None
    disabled_at: int | None = None
    disabled_reason: str | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    def listens_for(self, event_type: EventType) -> bool:
        return event_type in self.event_types


@dataclass(frozen=True, slots=True)
class SigningSecrets:
    """An endpoint's secrets, only ever on their way in (made, rotated,
    configured). `previous` also signs until `previous_until`, or for as
    long as it is configured when that is None."""

    current: str
    previous: str | None = None
    previous_until: int | None = None


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    #: Its retry window closed without a 2xx answer.
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one endpoint, as claimed for an attempt: with what the
    attempt needs (the endpoint's URL and the secrets that sign it)."""

    event_id: str
    endpoint_id: str
    tenant: TenantId
    event_type: EventType
    batch_id: str
    body: bytes
    created_at: int
    #: This attempt's number, from 1; also the claim's fencing token.
    attempt: int
    url: str
    #: Every secret that signs this attempt: the current one first.
    secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt got back: a status code, or an error before one."""

    status_code: int | None
    latency_ms: int
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        if self.error is not None:
            return self.error
        return f"answered HTTP {self.status_code}"


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One line of an endpoint's delivery log."""

    id: int
    endpoint_id: str
    event_id: str
    event_type: EventType
    batch_id: str
    attempt: int
    #: Unix seconds, with milliseconds.
    at: float
    status_code: int | None
    latency_ms: int
    error: str | None

    @property
    def succeeded(self) -> bool:
        return AttemptResult(self.status_code, self.latency_ms, self.error).succeeded


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed delivery is tried again: exponential backoff from
    `first_delay`, doubling up to `max_delay`, with jitter (each wait is
    drawn between half and all of its step, so receivers that failed
    together do not all come back at once), for `window` seconds after the
    event."""

    first_delay: float = 5.0
    max_delay: float = 3600.0
    window: float = 24 * 3600.0

    def step(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (from 1), before jitter."""
        return float(min(self.max_delay, self.first_delay * 2 ** min(attempt - 1, 62)))

    def next_attempt_at(
        self, attempt: int, created_at: float, now: float, rng: random.Random
    ) -> float | None:
        """When to try again after failed attempt `attempt`; None once the
        window has closed (the delivery then fails for good)."""
        step = self.step(attempt)
        at = now + step / 2 + rng.uniform(0, step / 2)
        deadline = created_at + self.window
        if now >= deadline:
            return None
        return min(at, deadline)


def disable_reason(failing_since: int, now: int, last_error: str) -> str:
    """What a disabled endpoint says about why."""
    hours = (now - failing_since) / 3600
    return (
        f"Disabled after every delivery failed for {hours:.1f} hours "
        f"(since unix time {failing_since}); the last attempt {last_error}. "
        "Fix the receiver, then enable the endpoint again."
    )


def url_problem(url: str) -> str | None:
    """Why `url` cannot be an endpoint, or None. Where it points is checked
    at each delivery instead (a name may resolve elsewhere later)."""
    if len(url) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if not (url.isascii() and url.isprintable()) or " " in url:
        return "must be printable ASCII without spaces (a host in punycode, a path %-encoded)"
    try:
        parsed = urlsplit(url)
        parsed.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        return "is not a valid URL"
    if parsed.scheme not in ("http", "https"):
        return "is not an http:// or https:// URL"
    if not parsed.hostname:
        return "names no host"
    if parsed.username is not None or parsed.password is not None:
        return "carries credentials; put them in the path or query instead"
    if parsed.fragment:
        return "has a fragment"
    return None


def event_types_problem(names: list[str]) -> str | None:
    """Why `names` cannot be an endpoint's event types, or None."""
    if not names:
        return "names no event type"
    unknown = sorted(set(names) - {e.value for e in EVENT_TYPES})
    if unknown:
        known = ", ".join(e.value for e in EVENT_TYPES)
        return f"names unknown event types {unknown}; known: {known}"
    return None
