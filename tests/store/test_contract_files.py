"""The store's contract for files, uploads and their parts, upload grants,
and what the retention sweep asks of it; on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest

from overnight.domain.files import FilePurpose, UploadStatus
from overnight.domain.grants import UploadGrant
from overnight.errors import Conflict
from overnight.store import Store
from overnight.types import UploadId

from .records import (
    ACME,
    GLOBEX,
    NOW,
    add_batch,
    add_file,
    batch_of,
    created_us,
    file_record,
    part,
    upload,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


# ------------------------------------------------------------------ files


async def test_a_file_reads_back_as_stored_to_its_tenant_only(store: Store) -> None:
    record = await add_file(store, line_count=3)
    assert await store.get_file(ACME, record.id) == record
    assert await store.get_file(None, record.id) == record  # the runner, an admin
    assert await store.get_file(GLOBEX, record.id) is None
    assert await store.get_file(ACME, "file-missing") is None


async def test_an_expired_file_is_hidden_from_live_reads(store: Store) -> None:
    record = await add_file(store, expires_at=NOW + 10)
    assert await store.get_file(ACME, record.id, live_at=NOW + 9) == record
    assert await store.get_file(ACME, record.id, live_at=NOW + 10) is None
    assert await store.get_file(ACME, record.id) == record


async def test_files_page_by_creation_in_either_order(store: Store) -> None:
    made = [await add_file(store) for _ in range(5)]
    await add_file(store, GLOBEX)
    ids = [f.id for f in made]

    async def page(after: str | None, newest_first: bool) -> list[str] | None:
        found = await store.list_files(
            ACME, purpose=None, newest_first=newest_first, after=after, limit=2
        )
        return None if found is None else [f.id for f in found]

    assert await page(None, True) == [ids[4], ids[3]]
    assert await page(ids[3], True) == [ids[2], ids[1]]
    assert await page(ids[1], True) == [ids[0]]
    assert await page(ids[0], True) == []
    assert await page(None, False) == [ids[0], ids[1]]
    assert await page(ids[1], False) == [ids[2], ids[3]]


async def test_a_cursor_the_caller_cannot_see_is_refused(store: Store) -> None:
    theirs = await add_file(store, GLOBEX)
    for cursor in (theirs.id, "file-missing"):
        listed = await store.list_files(
            ACME, purpose=None, newest_first=True, after=cursor, limit=10
        )
        assert listed is None


async def test_file_lists_filter_by_purpose_tenant_and_liveness(store: Store) -> None:
    batch_file = await add_file(store)
    await add_file(store, purpose=FilePurpose.FINE_TUNE)
    await add_file(store, expires_at=NOW)
    theirs = await add_file(store, GLOBEX)

    by_purpose = await store.list_files(
        ACME, purpose="batch", newest_first=True, after=None, limit=10, live_at=NOW
    )
    assert by_purpose == [batch_file]
    everyone = await store.list_files(None, purpose=None, newest_first=True, after=None, limit=10)
    assert everyone is not None and len(everyone) == 4 and theirs in everyone


async def test_deleting_a_file_returns_it_once(store: Store) -> None:
    record = await add_file(store)
    assert await store.delete_file(GLOBEX, record.id) is None
    assert await store.delete_file(ACME, record.id) == record
    assert await store.get_file(None, record.id) is None
    assert await store.delete_file(ACME, record.id) is None


async def test_a_file_an_unfinished_batch_reads_cannot_be_deleted(store: Store) -> None:
    batch = await add_batch(store)
    with pytest.raises(Conflict) as refused:
        await store.delete_file(ACME, batch.input_file_id)
    assert refused.value.code == "file_in_use"
    await store.request_cancel(ACME, batch.id, NOW)  # nobody validates it: cancelled at once
    assert await store.delete_file(ACME, batch.input_file_id) is not None


async def test_line_counts_and_checksum_lookups(store: Store) -> None:
    first = await add_file(store, sha256="cd" * 32)
    await add_file(store, sha256="cd" * 32)  # a later copy of the same bytes
    await add_file(store, GLOBEX, sha256="cd" * 32)
    await store.set_line_count(first.id, 42)

    found = await store.find_file_by_checksum(ACME, "cd" * 32, FilePurpose.BATCH, live_at=NOW)
    assert found == dataclasses.replace(first, line_count=42)
    other_purpose = await store.find_file_by_checksum(
        ACME, "cd" * 32, FilePurpose.FINE_TUNE, live_at=NOW
    )
    assert other_purpose is None
    assert (
        await store.find_file_by_checksum(ACME, "ef" * 32, FilePurpose.BATCH, live_at=NOW) is None
    )


# ---------------------------------------------------------------- uploads


async def test_an_upload_collects_parts_and_completes_once(store: Store) -> None:
    pending = upload()
    await store.insert_upload(pending)
    assert await store.get_upload(ACME, pending.id) == pending
    assert await store.get_upload(GLOBEX, pending.id) is None
    parts = [part(pending, 1), part(pending, 2)]
    for p in parts:
        await store.insert_part(p)
    assert sorted(await store.list_parts(pending.id), key=lambda p: p.part_number or 0) == parts

    record = file_record()
    await store.complete_upload(pending.id, record, created_us())
    done = await store.get_upload(ACME, pending.id)
    assert done is not None
    assert (done.status, done.file_id) == (UploadStatus.COMPLETED, record.id)
    assert await store.get_file(ACME, record.id) == record

    with pytest.raises(Conflict):
        await store.complete_upload(pending.id, file_record(), created_us())
    with pytest.raises(Conflict):
        await store.insert_part(part(pending, 3))


async def test_upload_status_moves_only_from_the_expected_one(store: Store) -> None:
    pending = upload()
    await store.insert_upload(pending)
    moved = await store.set_upload_status(
        pending.id, UploadStatus.CANCELLED, expected=UploadStatus.COMPLETED
    )
    assert moved is False
    assert await store.set_upload_status(
        pending.id, UploadStatus.CANCELLED, expected=UploadStatus.PENDING
    )
    cancelled = await store.get_upload(None, pending.id)
    assert cancelled is not None and cancelled.status is UploadStatus.CANCELLED


async def test_deleting_parts_empties_the_upload(store: Store) -> None:
    pending = upload()
    await store.insert_upload(pending)
    await store.insert_part(part(pending, 1))
    await store.delete_parts(pending.id)
    assert await store.list_parts(pending.id) == []


# ----------------------------------------------------------------- grants


def grant(
    token_hash: str, *, expires_at: int = NOW + 60, upload_id: str | None = None
) -> UploadGrant:
    return UploadGrant(
        token_hash=token_hash,
        tenant=ACME,
        file_id=file_record().id,
        filename="input.jsonl",
        purpose=FilePurpose.BATCH,
        created_at=NOW,
        expires_at=expires_at,
        upload_id=UploadId(upload_id) if upload_id else None,
        part_number=1 if upload_id else None,
    )


async def test_a_grant_is_spent_by_exactly_one_use(store: Store) -> None:
    fresh = grant("a" * 64)
    await store.insert_grants([fresh], forget_before=NOW)
    assert await store.use_grant(fresh.token_hash, NOW) == (True, fresh)
    used, seen = await store.use_grant(fresh.token_hash, NOW)
    assert used is False and seen == dataclasses.replace(fresh, used_at=NOW)
    assert await store.use_grant("f" * 64, NOW) == (False, None)


async def test_an_expired_grant_is_refused_then_forgotten(store: Store) -> None:
    stale = grant("b" * 64, expires_at=NOW)
    await store.insert_grants([stale], forget_before=NOW - 3600)
    assert await store.use_grant(stale.token_hash, NOW) == (False, stale)
    await store.insert_grants([], forget_before=NOW + 1)
    assert await store.use_grant(stale.token_hash, NOW) == (False, None)


async def test_part_grants_are_stored_with_their_upload(store: Store) -> None:
    pending = upload()
    grants = [grant("c" * 64, upload_id=pending.id)]
    await store.insert_grants(grants, forget_before=NOW, upload=pending)
    assert await store.get_upload(ACME, pending.id) == pending
    assert await store.use_grant(grants[0].token_hash, NOW) == (True, grants[0])


# -------------------------------------------------------------- retention


async def test_expired_files_are_listed_by_expiry_and_deleted_once(store: Store) -> None:
    later = await add_file(store, expires_at=NOW - 10)
    sooner = await add_file(store, expires_at=NOW - 20)
    young = await add_file(store, expires_at=NOW + 10)
    assert await store.expired_files(NOW, limit=10) == [sooner, later]
    assert await store.expired_files(NOW, limit=1) == [sooner]

    assert await store.delete_expired_file(sooner.id, NOW)
    assert not await store.delete_expired_file(sooner.id, NOW)
    assert not await store.delete_expired_file(young.id, NOW)
    assert await store.get_file(None, sooner.id) is None


async def test_an_expired_file_an_unfinished_batch_reads_is_kept(store: Store) -> None:
    record = await add_file(store, expires_at=NOW - 1)
    await store.insert_batch(batch_of(record), created_us())
    assert await store.expired_files(NOW, limit=10) == []
    assert not await store.delete_expired_file(record.id, NOW)
    assert await store.get_file(None, record.id) == record


async def test_pending_uploads_past_their_time_expire_once(store: Store) -> None:
    old, young, done = upload(expires_at=NOW - 1), upload(), upload(expires_at=NOW - 1)
    for u in (old, young, done):
        await store.insert_upload(u)
    await store.complete_upload(done.id, file_record(), created_us())

    expired = await store.expire_uploads(NOW)
    assert expired == [dataclasses.replace(old, status=UploadStatus.EXPIRED)]
    assert await store.expire_uploads(NOW) == []
    still = await store.get_upload(None, young.id)
    assert still is not None and still.status is UploadStatus.PENDING
