"""Which batch gets the next chunk: the scheduling policy, as pure code.

1. Urgent first: a batch whose deadline is within `urgent_within` seconds
   goes before every other, earliest deadline first.
2. Then fair share between tenants: the tenant with the fewest chunks
   running goes first.
3. Then fair share between batches: within those, the batch with the fewest
   chunks running.
4. Then priority: higher first (Together's `priority`, or the OpenAI
   metadata key `priority`).
5. Then age: the older batch first.

Running chunks are the share being measured because every running chunk
gets an equal turn at its model's slots (the limiter is first-come, first
served), so equal chunks mean equal throughput. A 100-line batch that
arrives behind a million-line one therefore gets the very next free chunk
slot instead of waiting for the big one to end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from overnight.types import BatchId, TenantId


@dataclass(frozen=True, slots=True)
class Candidate:
    batch_id: BatchId
    tenant: TenantId
    deadline: float
    priority: int
    created_us: int


def schedule_order(
    candidates: Iterable[Candidate],
    *,
    running_by_batch: Mapping[BatchId, int],
    running_by_tenant: Mapping[TenantId, int],
    now: float,
    urgent_within: float,
) -> list[Candidate]:
    def key(c: Candidate) -> tuple[int, float, int, int, int, int]:
        urgent = c.deadline - now <= urgent_within
        return (
            0 if urgent else 1,
            c.deadline if urgent else 0.0,
            running_by_tenant.get(c.tenant, 0),
            running_by_batch.get(c.batch_id, 0),
            -c.priority,
            c.created_us,
        )

    return sorted(candidates, key=key)
