"""The use cases (service.py) on a real SQLite store and local blobs, with
no HTTP in between: what each refuses, with which code and param, and what
it leaves behind in storage when it refuses."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest

from overnight.errors import Conflict, InvalidRequest, NotFound, OvernightError, PayloadTooLarge
from overnight.service import (
    Service,
    check_expiry,
    clean_filename,
    uploadable_purpose,
)
from overnight.types import TenantId

from .conftest import Clock, Storage

pytestmark = pytest.mark.asyncio(loop_scope="module")

LINES = b'{"a": 1}\n{"b": 2}\n{"c": 3}'


async def chunks(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


@pytest.fixture
def service(storage: Storage, clock: Clock) -> Service:
    return storage.service(clock, max_upload_bytes=64 * 1024)


async def stored(
    service: Service, tenant: TenantId, data: bytes = LINES, purpose: str = "batch", **kw: object
) -> str:
    sink = service.new_file_sink()
    await sink.write(data)
    record = await service.create_file(tenant, sink, filename="in.jsonl", purpose=purpose, **kw)  # type: ignore[arg-type]
    return record.id


def refused(caught: pytest.ExceptionInfo[OvernightError], code: str, param: str | None) -> None:
    assert (caught.value.code, caught.value.param) == (code, param), caught.value


# ------------------------------------------------------------------- files


async def test_a_sink_refuses_past_its_limit_and_keeps_nothing(
    service: Service, storage: Storage
) -> None:
    sink = service.new_file_sink(limit=10)
    await sink.write(b"12345")
    with pytest.raises(PayloadTooLarge) as caught:
        await sink.write(b"678901")
    refused(caught, "file_too_large", "file")
    assert sink.closed
    assert storage.blob_keys(sink.key) == []


async def test_a_file_is_stored_with_its_lines_digest_and_a_clean_name(
    service: Service, tenant: TenantId, storage: Storage
) -> None:
    sink = service.new_file_sink()
    for piece in (b'{"a": 1}\n{"b"', b": 2}\n", b'{"c": 3}'):
        await sink.write(piece)
    record = await service.create_file(
        tenant, sink, filename="../../etc/in.jsonl", purpose="batch", expires_after=60
    )
    assert (record.filename, record.bytes, record.line_count) == ("in.jsonl", len(LINES), 3)
    assert record.sha256 == hashlib.sha256(LINES).hexdigest()
    assert record.expires_at == record.created_at + 60
    found, body = await service.file_content(tenant, record.id)
    assert found == record
    assert b"".join([piece async for piece in body]) == LINES


@pytest.mark.parametrize(
    ("purpose", "expires_after", "code", "param"),
    [
        ("homework", None, "invalid_value", "purpose"),
        ("batch_output", None, "invalid_value", "purpose"),
        ("batch", 0, "invalid_value", "expires_after[seconds]"),
    ],
)
async def test_a_refused_file_leaves_no_bytes(
    service: Service,
    tenant: TenantId,
    storage: Storage,
    purpose: str,
    expires_after: int | None,
    code: str,
    param: str,
) -> None:
    sink = service.new_file_sink()
    await sink.write(LINES)
    with pytest.raises(InvalidRequest) as caught:
        await service.create_file(
            tenant, sink, filename="x", purpose=purpose, expires_after=expires_after
        )
    refused(caught, code, param)
    assert storage.blob_keys(sink.key) == []


async def test_bytes_that_miss_their_checksum_are_dropped(
    service: Service, tenant: TenantId, storage: Storage
) -> None:
    sink = service.new_file_sink()
    await sink.write(LINES)
    with pytest.raises(InvalidRequest) as caught:
        await service.create_file(tenant, sink, filename="x", purpose="batch", checksum="0" * 64)
    refused(caught, "checksum_mismatch", "checksum")
    assert storage.blob_keys(sink.key) == []
    assert (await service.list_files(tenant)).items == []


async def test_files_others_cannot_see_are_one_404(
    service: Service, tenant: TenantId, clock: Clock
) -> None:
    file_id = await stored(service, tenant, expires_after=10)
    for who, which in [
        (TenantId("someone-else"), file_id),
        (tenant, "file-\x00abc"),
        (tenant, "file-" + "x" * 200),
        (tenant, "file-nope"),
    ]:
        with pytest.raises(NotFound) as caught:
            await service.get_file(who, which, param="input_file_id")
        refused(caught, "file_not_found", "input_file_id")
    assert (await service.get_file(tenant, file_id)).id == file_id
    clock.now += 11
    with pytest.raises(NotFound):
        await service.get_file(tenant, file_id)


async def test_file_lists_page_by_cursor_in_either_order(
    service: Service, tenant: TenantId, clock: Clock
) -> None:
    ids = []
    for _ in range(3):
        ids.append(await stored(service, tenant))
        clock.now += 1
    await stored(service, tenant, purpose="user_data")
    first = await service.list_files(tenant, purpose="batch", order="asc", limit=2)
    assert ([f.id for f in first.items], first.has_more) == (ids[:2], True)
    rest = await service.list_files(tenant, purpose="batch", order="asc", after=ids[1], limit=2)
    assert ([f.id for f in rest.items], rest.has_more) == (ids[2:], False)
    newest = await service.list_files(tenant, purpose="batch", limit=1)
    assert [f.id for f in newest.items] == [ids[2]]


@pytest.mark.parametrize(
    ("kwargs", "code", "param"),
    [
        ({"order": "sideways"}, "invalid_value", "order"),
        ({"limit": 0}, "invalid_value", "limit"),
        ({"limit": 10_001}, "invalid_value", "limit"),
        ({"purpose": "homework"}, "invalid_value", "purpose"),
        ({"after": "file-\x00"}, "invalid_cursor", "after"),
        ({"after": "file-nope"}, "invalid_cursor", "after"),
    ],
)
async def test_bad_file_list_arguments_are_refused(
    service: Service, tenant: TenantId, kwargs: dict[str, object], code: str, param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await service.list_files(tenant, **kwargs)  # type: ignore[arg-type]
    refused(caught, code, param)


async def test_deleting_a_file_drops_its_bytes(
    service: Service, tenant: TenantId, storage: Storage
) -> None:
    record = await service.get_file(tenant, await stored(service, tenant))
    assert storage.blob_keys(record.blob_key) == [record.blob_key]
    assert (await service.delete_file(tenant, record.id)).id == record.id
    assert storage.blob_keys(record.blob_key) == []
    with pytest.raises(NotFound):
        await service.delete_file(tenant, record.id)


# ----------------------------------------------------------------- uploads


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"bytes": -1}, "bytes"),
        ({"bytes": 64 * 1024 + 1}, "bytes"),
        ({"mime_type": "text/\x00plain"}, "mime_type"),
        ({"mime_type": "t" * 256}, "mime_type"),
        ({"purpose": "batch_output"}, "purpose"),
        ({"file_expires_after": 0}, "expires_after.seconds"),
    ],
)
async def test_bad_uploads_are_refused(
    service: Service, tenant: TenantId, kwargs: dict[str, object], param: str
) -> None:
    fields: dict[str, object] = {
        "filename": "u.txt",
        "purpose": "user_data",
        "bytes": 3,
        "mime_type": "text/plain",
        **kwargs,
    }
    with pytest.raises(InvalidRequest) as caught:
        await service.create_upload(tenant, **fields)  # type: ignore[arg-type]
    refused(caught, "invalid_value", param)


async def part(service: Service, tenant: TenantId, upload_id: str, data: bytes) -> str:
    upload = await service.get_upload(tenant, upload_id)
    sink = service.new_part_sink(upload)
    await sink.write(data)
    return (await service.add_upload_part(tenant, upload_id, sink)).id


async def test_an_upload_joins_its_parts_in_the_order_named(
    service: Service, tenant: TenantId, storage: Storage, clock: Clock
) -> None:
    upload = await service.create_upload(
        tenant,
        filename="u.txt",
        purpose="user_data",
        bytes=6,
        mime_type="text/plain",
        file_expires_after=100,
    )
    first = await part(service, tenant, upload.id, b"abc")
    second = await part(service, tenant, upload.id, b"def")
    for ids, code in [([first, first], "invalid_value"), ([first, "part_nope"], "invalid_value")]:
        with pytest.raises(InvalidRequest) as caught:
            await service.complete_upload(tenant, upload.id, ids)
        refused(caught, code, "part_ids")
    with pytest.raises(InvalidRequest) as caught:
        await service.complete_upload(tenant, upload.id, [first])
    refused(caught, "invalid_value", "bytes")
    with pytest.raises(InvalidRequest) as caught:
        await service.complete_upload(tenant, upload.id, [second, first], md5="0" * 32)
    refused(caught, "checksum_mismatch", "md5")
    md5 = hashlib.md5(b"defabc").hexdigest()
    done = await service.complete_upload(tenant, upload.id, [second, first], md5=md5)
    assert done.status.value == "completed" and done.file_id is not None
    file = await service.get_file(tenant, done.file_id)
    assert file.expires_at == file.created_at + 100
    _, body = await service.file_content(tenant, done.file_id)
    assert b"".join([piece async for piece in body]) == b"defabc"
    # The parts are gone, and the upload can no longer change.
    assert storage.blob_keys(f"uploads/{upload.id}") == []
    with pytest.raises(Conflict) as conflict:
        await service.cancel_upload(tenant, upload.id)
    assert conflict.value.code == "upload_not_pending"


async def test_a_pending_upload_expires_with_its_parts(
    service: Service, tenant: TenantId, storage: Storage, clock: Clock
) -> None:
    upload = await service.create_upload(
        tenant, filename="u", purpose="user_data", bytes=3, mime_type="text/plain"
    )
    await part(service, tenant, upload.id, b"abc")
    assert storage.blob_keys(f"uploads/{upload.id}") != []
    clock.now += service.settings.upload_expiry
    assert (await service.get_upload(tenant, upload.id)).status.value == "expired"
    assert storage.blob_keys(f"uploads/{upload.id}") == []
    sink = service.new_part_sink(upload)
    await sink.write(b"abc")
    with pytest.raises(Conflict):
        await service.add_upload_part(tenant, upload.id, sink)
    assert storage.blob_keys(sink.key) == []


async def test_a_cancelled_upload_drops_its_parts_and_takes_no_more(
    service: Service, tenant: TenantId, storage: Storage
) -> None:
    upload = await service.create_upload(
        tenant, filename="u", purpose="user_data", bytes=3, mime_type="text/plain"
    )
    await part(service, tenant, upload.id, b"ab")
    assert (await service.cancel_upload(tenant, upload.id)).status.value == "cancelled"
    assert storage.blob_keys(f"uploads/{upload.id}") == []
    with pytest.raises(NotFound) as caught:
        await service.cancel_upload(TenantId("someone-else"), upload.id)
    refused(caught, "upload_not_found", "upload_id")


# ----------------------------------------------------------------- batches


@pytest.mark.parametrize(
    ("kwargs", "code", "param"),
    [
        ({"endpoint": "/v1/moderations"}, "invalid_value", "endpoint"),
        ({"priority": 2**31}, "invalid_value", "priority"),
        ({"model": "gpt-unknown"}, "model_not_found", "model"),
        ({"completion_window": "forever"}, "invalid_value", "completion_window"),
        ({"completion_window": "30m"}, "invalid_value", "completion_window"),
        ({"completion_window": "8d"}, "invalid_value", "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "invalid_value", "metadata"),
        ({"metadata": {"k": 1}}, "invalid_value", "metadata"),
        ({"metadata": {"k": "\ud800"}}, "invalid_value", "metadata"),
        ({"metadata": {"team": "x" * 513}}, "invalid_value", "metadata.team"),
        ({"output_expires_after": 0}, "invalid_value", "output_expires_after.seconds"),
        ({"input_file_id": "file-nope"}, "file_not_found", "input_file_id"),
    ],
)
async def test_bad_batches_are_refused(
    service: Service, tenant: TenantId, kwargs: dict[str, object], code: str, param: str
) -> None:
    fields: dict[str, object] = {
        "input_file_id": await stored(service, tenant),
        "endpoint": "/v1/chat/completions",
        **kwargs,
    }
    with pytest.raises(OvernightError) as caught:
        await service.create_batch(tenant, **fields)  # type: ignore[arg-type]
    refused(caught, code, param)
    assert (await service.list_batches(tenant)).items == []


async def test_a_batch_needs_a_batch_input_file(service: Service, tenant: TenantId) -> None:
    file_id = await stored(service, tenant, purpose="user_data")
    with pytest.raises(InvalidRequest) as caught:
        await service.create_batch(tenant, input_file_id=file_id, endpoint="/v1/embeddings")
    refused(caught, "invalid_value", "input_file_id")


async def test_a_new_batch_wakes_the_runner_and_takes_the_defaults(
    storage: Storage, clock: Clock, tenant: TenantId
) -> None:
    service = storage.service(clock, default_output_expires_after=3600)
    woken = service.wakeups.subscribe()
    batch = await service.create_batch(
        tenant, input_file_id=await stored(service, tenant), endpoint="/v1/chat/completions"
    )
    assert woken.is_set()
    assert (batch.status.value, batch.completion_window) == ("validating", "24h")
    assert batch.expires_at == int(clock.now) + 24 * 3600
    assert batch.output_expires_after == 3600
    assert batch.input_bytes == len(LINES)


async def test_batches_are_found_by_either_id_form_and_paged(
    service: Service, tenant: TenantId, clock: Clock
) -> None:
    file_id = await stored(service, tenant)
    ids = []
    for _ in range(3):
        batch = await service.create_batch(
            tenant, input_file_id=file_id, endpoint="/v1/chat/completions"
        )
        ids.append(batch.id)
        clock.now += 1
    together_form = str(uuid.UUID(ids[0].removeprefix("batch_")))
    assert (await service.get_batch(tenant, together_form)).id == ids[0]
    page = await service.list_batches(tenant, limit=2)
    assert ([b.id for b in page.items], page.has_more) == ([ids[2], ids[1]], True)
    rest = await service.list_batches(tenant, after=ids[1], limit=2)
    assert ([b.id for b in rest.items], rest.has_more) == ([ids[0]], False)
    for after in ("batch_nope", "batch_\x00"):
        with pytest.raises(InvalidRequest) as caught:
            await service.list_batches(tenant, after=after)
        refused(caught, "invalid_cursor", "after")
    for batch_id in (ids[0], "batch_\x00"):
        with pytest.raises(NotFound) as missing:
            await service.get_batch(TenantId("someone-else"), batch_id)
        refused(missing, "batch_not_found", "batch_id")


async def test_cancelling_wakes_the_runner_and_hides_other_tenants_batches(
    service: Service, tenant: TenantId
) -> None:
    batch = await service.create_batch(
        tenant, input_file_id=await stored(service, tenant), endpoint="/v1/chat/completions"
    )
    with pytest.raises(NotFound) as caught:
        await service.cancel_batch(TenantId("someone-else"), batch.id)
    refused(caught, "batch_not_found", "batch_id")
    woken = service.wakeups.subscribe()
    cancelled = await service.cancel_batch(tenant, batch.id)
    assert cancelled.status.value in ("cancelling", "cancelled")
    assert woken.is_set()


# ----------------------------------------------------------------- helpers


async def test_a_filename_is_only_a_label() -> None:
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("..\\..\\boot.ini") == "boot.ini"
    assert clean_filename("a\x00b\nc.txt") == "abc.txt"
    assert clean_filename("dir/") == "upload"
    assert len(clean_filename("x" * 1000)) == 255


async def test_purposes_and_expiries() -> None:
    assert uploadable_purpose("batch-api").value == "batch-api"
    for purpose in ("batch_output", "nonsense"):
        with pytest.raises(InvalidRequest):
            uploadable_purpose(purpose)
    check_expiry(None, "p")
    check_expiry(1, "p")
    with pytest.raises(InvalidRequest) as caught:
        check_expiry(10 * 366 * 24 * 3600, "p")
    assert caught.value.param == "p"
