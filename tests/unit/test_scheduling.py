"""The scheduling policy: urgent first, then fair share, then priority, then age."""

from __future__ import annotations

from overnight.domain.scheduling import Candidate, schedule_order
from overnight.types import BatchId, TenantId

NOW = 1_000_000.0
DAY = 86400.0


def batch(
    name: str, tenant: str = "t", *, deadline: float = NOW + DAY, priority: int = 0, age: int = 0
) -> Candidate:
    return Candidate(BatchId(name), TenantId(tenant), deadline, priority, -age)


def order(candidates: list[Candidate], **running: int) -> list[str]:
    by_batch = {BatchId(k): v for k, v in running.items() if not k.startswith("tenant_")}
    by_tenant = {
        TenantId(k.removeprefix("tenant_")): v
        for k, v in running.items()
        if k.startswith("tenant_")
    }
    return [
        c.batch_id
        for c in schedule_order(
            candidates,
            running_by_batch=by_batch,
            running_by_tenant=by_tenant,
            now=NOW,
            urgent_within=3600,
        )
    ]


def test_a_small_new_batch_goes_before_a_big_running_one() -> None:
    big, small = batch("big", age=10), batch("small", age=1)
    assert order([big, small], big=4, tenant_t=4) == ["small", "big"]


def test_tenants_share_before_batches_do() -> None:
    a1, a2, b1 = batch("a1", "A", age=3), batch("a2", "A", age=2), batch("b1", "B", age=1)
    assert order([a1, a2, b1], a1=2, tenant_A=2) == ["b1", "a2", "a1"]


def test_urgent_batches_go_first_by_deadline() -> None:
    relaxed = batch("relaxed")
    soon = batch("soon", deadline=NOW + 600)
    sooner = batch("sooner", deadline=NOW + 60)
    assert order([relaxed, soon, sooner], sooner=5, soon=5, tenant_t=10) == [
        "sooner",
        "soon",
        "relaxed",
    ]


def test_priority_breaks_ties_then_age() -> None:
    low, high, old = batch("low", age=5), batch("high", priority=5), batch("old", age=9)
    assert order([low, high, old]) == ["high", "old", "low"]
