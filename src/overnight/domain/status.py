"""Batch statuses and the transitions allowed between them.

The table below is the single source of truth; `docs/architecture.md` draws it
with the same letters, and the store guards every transition in its WHERE
clause, so a racing worker cannot move a batch along an edge not listed here.

    a  validating  -> in_progress   the file is valid; chunks are cut
    b  validating  -> failed        the file is invalid (errors name the lines)
    c  validating  -> cancelling    cancel requested before execution began
    d  in_progress -> cancelling    cancel requested while running
    e  in_progress -> finalizing    every chunk is done (all ran, or the
                                    window closed and the rest were written
                                    as batch_expired)
    f  cancelling  -> finalizing    every chunk is drained
    g  finalizing  -> completed     all lines ran (some may have failed)
    h  finalizing  -> expired       the window closed before every line ran
    i  finalizing  -> cancelled     cancel drained the batch
    j  cancelling  -> cancelled     cancelled before any chunk existed
    k  finalizing  -> failed        finalisation crashed `max_chunk_attempts`
                                    times (validation's crashes take edge b)
"""

from __future__ import annotations

from enum import StrEnum


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)

TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.VALIDATING: frozenset(
        {BatchStatus.IN_PROGRESS, BatchStatus.FAILED, BatchStatus.CANCELLING}
    ),
    BatchStatus.IN_PROGRESS: frozenset({BatchStatus.CANCELLING, BatchStatus.FINALIZING}),
    BatchStatus.CANCELLING: frozenset({BatchStatus.FINALIZING, BatchStatus.CANCELLED}),
    BatchStatus.FINALIZING: frozenset(
        {BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED, BatchStatus.FAILED}
    ),
    BatchStatus.FAILED: frozenset(),
    BatchStatus.COMPLETED: frozenset(),
    BatchStatus.EXPIRED: frozenset(),
    BatchStatus.CANCELLED: frozenset(),
}


def can_transition(current: BatchStatus, target: BatchStatus) -> bool:
    return target in TRANSITIONS[current]


def sources_of(target: BatchStatus) -> frozenset[BatchStatus]:
    """Every status from which `target` may be reached: the store's WHERE guard."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


class StopReason(StrEnum):
    """Why a batch stops dispatching before every line ran. Cancel and expiry
    are one path with two codes: the unrun lines are written to the error
    file with `batch_cancelled` or `batch_expired`."""

    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def error_code(self) -> str:
        return f"batch_{self.value}"

    @property
    def final_status(self) -> BatchStatus:
        return BatchStatus.CANCELLED if self is StopReason.CANCELLED else BatchStatus.EXPIRED

    @property
    def never_ran_message(self) -> str:
        """The error message of a line this stop kept from running."""
        verb = "was cancelled" if self is StopReason.CANCELLED else "expired"
        return f"The batch {verb} before this request ran."
