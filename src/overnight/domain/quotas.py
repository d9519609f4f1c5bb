"""Per-tenant quotas: how much unfinished work one tenant may hold.

A shared deployment runs every tenant's batches on the same models; these
bound what one tenant can pile up, so that one runaway script cannot queue
a month of work in front of everyone else. Two numbers, each a default from
the settings that the admin API may override per tenant:

- pending batches: batches not yet ended (validating, in progress,
  finalizing, cancelling);
- enqueued requests: the requests in them that have not run yet. Until a
  batch is validated its file's line count stands in for its requests.
"""

from __future__ import annotations

from dataclasses import dataclass

from overnight.domain.status import BatchStatus

#: Statuses whose batches count as pending.
PENDING_STATUSES = frozenset(
    {
        BatchStatus.VALIDATING,
        BatchStatus.IN_PROGRESS,
        BatchStatus.FINALIZING,
        BatchStatus.CANCELLING,
    }
)


@dataclass(frozen=True, slots=True)
class Quotas:
    max_pending_batches: int
    max_enqueued_requests: int


@dataclass(frozen=True, slots=True)
class QuotaOverrides:
    """What an admin set for one tenant; None keeps the default."""

    max_pending_batches: int | None = None
    max_enqueued_requests: int | None = None

    def over(self, defaults: Quotas) -> Quotas:
        return Quotas(
            self.max_pending_batches
            if self.max_pending_batches is not None
            else defaults.max_pending_batches,
            self.max_enqueued_requests
            if self.max_enqueued_requests is not None
            else defaults.max_enqueued_requests,
        )


@dataclass(frozen=True, slots=True)
class TenantUsage:
    pending_batches: int = 0
    enqueued_requests: int = 0


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    code: str
    message: str


def refusal(usage: TenantUsage, quotas: Quotas, *, adding: int) -> QuotaRefusal | None:
    """Why one more batch of `adding` requests would break a quota, or None."""
    if usage.pending_batches + 1 > quotas.max_pending_batches:
        return QuotaRefusal(
            "too_many_pending_batches",
            f"This tenant already has {usage.pending_batches} unfinished batches, the most "
            f"allowed ({quotas.max_pending_batches}); wait for some to end or cancel them.",
        )
    if usage.enqueued_requests + adding > quotas.max_enqueued_requests:
        return QuotaRefusal(
            "too_many_enqueued_requests",
            f"This batch would bring this tenant's requests waiting to run to "
            f"{usage.enqueued_requests + adding}, over the limit of "
            f"{quotas.max_enqueued_requests}; wait for running batches to progress.",
        )
    return None
