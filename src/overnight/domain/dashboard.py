"""What the dashboard shows beside batches and files: a batch's counts over
time, the workers and what they hold, and a signed-in browser's session.

Pure records, filled by the store (`store/dashboard.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from overnight.types import TenantId

#: About how many snapshots a batch keeps: the interval between two grows
#: with the batch's age (elapsed / this), so a long batch keeps a handful
#: per doubling of its age rather than one every few seconds.
SNAPSHOTS_PER_BATCH = 120


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A running batch's counts at one moment (unix seconds)."""

    at: int
    completed: int
    failed: int

    @property
    def done(self) -> int:
        return self.completed + self.failed


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A live worker, as the dashboard lists it."""

    id: str
    started_at: float
    heartbeat_at: float
    chunks_held: int


@dataclass(frozen=True, slots=True)
class UiSession:
    """A signed-in browser. Only the cookie's SHA-256 (`token_hash`) is
    stored; `csrf` must come back with every form the session posts.
    `key_digest` is the SHA-256 of the API key it signed in with (None in
    local mode): each page checks the key is still valid."""

    token_hash: str
    tenant: TenantId | None
    admin: bool
    csrf: str
    created_at: int
    expires_at: int
    key_digest: str | None = None


def snapshot_interval(elapsed: float, minimum: float) -> float:
    """Seconds to wait after the last snapshot of a batch running for
    `elapsed` seconds: at least `minimum`, and sparser as it ages."""
    return max(minimum, elapsed / SNAPSHOTS_PER_BATCH)
