"""The store's contract for tenants (API keys, quotas, usage, who exists)
and for idempotency keys; on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest

from overnight.domain.chunk import Tally
from overnight.domain.idempotency import ABANDONED_AFTER, KEPT_FOR, IdempotencyRecord
from overnight.domain.keys import ApiKey, KeyRole
from overnight.domain.quotas import QuotaOverrides, TenantUsage
from overnight.store import Store

from .records import (
    ACME,
    ALICE,
    GLOBEX,
    NOW,
    add_batch,
    add_file,
    batch_of,
    claim,
    created_us,
    running_batch,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


def api_key(name: str, tenant: str | None = "acme", *, created_at: int = NOW) -> ApiKey:
    return ApiKey(
        id=f"key_{name}",
        digest=name * 64,
        shown=f"ovn-{name}",
        role=KeyRole.TENANT if tenant else KeyRole.ADMIN,
        tenant=ACME if tenant == "acme" else GLOBEX if tenant else None,
        created_at=created_at,
    )


# ------------------------------------------------------------------- keys


async def test_keys_are_found_by_digest_until_revoked(store: Store) -> None:
    assert not await store.has_api_keys()
    key = api_key("a")
    await store.insert_api_key(key)
    assert await store.has_api_keys()
    assert await store.find_api_key(key.digest) == key
    assert await store.find_api_key("f" * 64) is None

    revoked = await store.revoke_api_keys(NOW + 1, key_id=key.id)
    assert revoked == [dataclasses.replace(key, revoked_at=NOW + 1)]
    assert await store.find_api_key(key.digest) is None
    assert await store.has_api_keys()  # once keys exist, local mode never returns
    assert await store.revoke_api_keys(NOW + 2, key_id=key.id) == []


async def test_keys_are_listed_and_revoked_by_tenant_or_shown_prefix(store: Store) -> None:
    first, second = api_key("a", created_at=NOW), api_key("b", created_at=NOW + 1)
    theirs, admin = api_key("c", "globex"), api_key("d", None)
    for key in (first, second, theirs, admin):
        await store.insert_api_key(key)
    assert await store.list_api_keys("acme") == [first, second]
    assert len(await store.list_api_keys()) == 4

    by_prefix = await store.revoke_api_keys(NOW, key_id=second.shown)
    assert [k.id for k in by_prefix] == [second.id]
    assert await store.list_api_keys("acme") == [first]
    assert [k.id for k in await store.list_api_keys("acme", include_revoked=True)] == [
        first.id,
        second.id,
    ]
    assert [k.id for k in await store.revoke_api_keys(NOW, tenant="acme")] == [first.id]
    assert await store.revoke_api_keys(NOW) == []  # names nothing: revokes nothing
    assert await store.find_api_key(theirs.digest) == theirs


# ----------------------------------------------------------------- quotas


async def test_quota_overrides_are_set_and_replaced(store: Store) -> None:
    assert await store.quota_overrides("acme") == QuotaOverrides()
    await store.set_quota_overrides("acme", QuotaOverrides(3, None), NOW)
    assert await store.quota_overrides("acme") == QuotaOverrides(3, None)
    await store.set_quota_overrides("acme", QuotaOverrides(None, 500), NOW + 1)
    assert await store.quota_overrides("acme") == QuotaOverrides(None, 500)
    assert await store.quota_overrides("globex") == QuotaOverrides()


async def test_usage_counts_unfinished_batches_and_the_requests_yet_to_run(store: Store) -> None:
    await running_batch(store, chunks=2, lines=10)
    work = await claim(store)
    await store.record_progress(
        work.chunk.key,
        ALICE,
        work.chunk.attempts,
        Tally(completed=4, failed=1),
        Tally(),
        done=False,
        now=NOW,
    )
    validating = await add_file(store, line_count=7)
    await store.insert_batch(batch_of(validating), created_us())
    ended = await add_batch(store)
    await store.request_cancel(ACME, ended.id, NOW)
    await add_batch(store, GLOBEX)

    usage = await store.tenant_usage("acme")
    assert usage == TenantUsage(pending_batches=2, enqueued_requests=(20 - 5) + 7)
    assert await store.tenant_usage("nobody") == TenantUsage()


async def test_known_tenants_are_those_with_keys_quotas_files_or_batches(store: Store) -> None:
    await store.insert_api_key(api_key("a", "acme"))
    await store.insert_api_key(api_key("d", None))
    await store.set_quota_overrides("initech", QuotaOverrides(1, 1), NOW)
    await add_file(store, GLOBEX)
    await add_batch(store, ACME)
    assert await store.known_tenants() == {"acme", "globex", "initech"}


# -------------------------------------------------------- idempotency keys


async def test_an_idempotency_key_is_claimed_once_and_answered(store: Store) -> None:
    route = "POST /v1/batches"
    assert await store.claim_idempotency_key(ACME, "k1", route, NOW) is None
    held = await store.claim_idempotency_key(ACME, "k1", route, NOW + 1)
    assert held == IdempotencyRecord(tenant=ACME, key="k1", route=route, created_at=NOW)
    assert await store.claim_idempotency_key(GLOBEX, "k1", route, NOW) is None  # per tenant

    await store.answer_idempotency_key(
        held, request_hash="h", status_code=200, body=b'{"id":"batch_1"}', object_id="batch_1"
    )
    answered = await store.claim_idempotency_key(ACME, "k1", route, NOW + 2)
    assert answered == dataclasses.replace(
        held, request_hash="h", status_code=200, body=b'{"id":"batch_1"}', object_id="batch_1"
    )
    await store.release_idempotency_key(held)  # answered: a release changes nothing
    assert await store.claim_idempotency_key(ACME, "k1", route, NOW + 3) == answered


async def test_a_released_claim_frees_the_key(store: Store) -> None:
    assert await store.claim_idempotency_key(ACME, "k2", "POST /v1/files", NOW) is None
    held = await store.claim_idempotency_key(ACME, "k2", "POST /v1/files", NOW)
    assert held is not None
    await store.release_idempotency_key(held)
    assert await store.claim_idempotency_key(ACME, "k2", "POST /v1/files", NOW + 1) is None


async def test_idempotency_keys_lapse_after_their_day_or_when_abandoned(store: Store) -> None:
    route = "POST /v1/batches"
    await store.claim_idempotency_key(ACME, "answered", route, NOW)
    answered = await store.claim_idempotency_key(ACME, "answered", route, NOW)
    assert answered is not None
    await store.answer_idempotency_key(
        answered, request_hash="h", status_code=200, body=b"{}", object_id=None
    )
    await store.claim_idempotency_key(ACME, "abandoned", route, NOW)

    later = NOW + ABANDONED_AFTER
    assert await store.claim_idempotency_key(ACME, "abandoned", route, later) is None
    assert await store.claim_idempotency_key(ACME, "answered", route, later) is not None
    assert await store.claim_idempotency_key(ACME, "answered", route, NOW + KEPT_FOR) is None


async def test_the_sweep_drops_only_lapsed_idempotency_keys(store: Store) -> None:
    route = "POST /v1/batches"
    await store.claim_idempotency_key(ACME, "old", route, NOW)
    await store.claim_idempotency_key(ACME, "young", route, NOW + 1)
    assert await store.delete_expired_idempotency_keys(NOW + ABANDONED_AFTER) == 1
    assert await store.claim_idempotency_key(ACME, "young", route, NOW + 2) is not None
    assert await store.claim_idempotency_key(ACME, "old", route, NOW + 2) is None
