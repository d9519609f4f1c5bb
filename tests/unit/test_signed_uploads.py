"""Signed-URL uploads (signed_uploads.py), Together's way in, as use cases
over a real SQLite store and local blobs: one-time URLs, their expiry,
checksums and duplicates, and multipart assembly by part number and ETag."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from overnight.domain.files import Upload
from overnight.errors import Conflict, Forbidden, InvalidRequest, NotFound, PayloadTooLarge
from overnight.service import Service
from overnight.signed_uploads import MAX_PARTS, DuplicateFile, SignedUploads
from overnight.types import TenantId

from .conftest import Clock, Storage

pytestmark = pytest.mark.asyncio(loop_scope="module")

DATA = b'{"a": 1}\n{"b": 2}\n'


async def body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


@pytest.fixture
def service(storage: Storage, clock: Clock) -> Service:
    return storage.service(clock, upload_url_expiry=60, multipart_threshold=1024)


@pytest.fixture
def uploads(service: Service) -> SignedUploads:
    return SignedUploads(service)


async def test_a_granted_url_stores_the_file_under_the_promised_id_once(
    uploads: SignedUploads, tenant: TenantId
) -> None:
    granted = await uploads.grant(tenant, filename="dir/in.jsonl", purpose="batch-api")
    received = await uploads.receive(granted.token, body(DATA[:5], DATA[5:]))
    assert received.file is not None
    assert received.file.id == granted.file_id
    assert received.etag == hashlib.sha256(DATA).hexdigest()
    assert (received.file.filename, received.file.line_count) == ("in.jsonl", 2)
    with pytest.raises(Forbidden) as caught:
        await uploads.receive(granted.token, body(DATA))
    assert caught.value.code == "upload_url_rejected"
    assert "already used" in caught.value.message
    assert (await uploads.preprocess(tenant, granted.file_id)).line_count == 2


async def test_a_url_works_until_its_expiry_and_no_longer(
    uploads: SignedUploads, tenant: TenantId, clock: Clock
) -> None:
    clock.now = 1_700_000_000.999
    late = await uploads.grant(tenant, filename="a", purpose="batch-api")
    on_time = await uploads.grant(tenant, filename="b", purpose="batch-api")
    clock.now += 59.5  # 59.5 s later: within its 60 s, though a whole second later
    assert (await uploads.receive(on_time.token, body(DATA))).file is not None
    clock.now += 1
    with pytest.raises(Forbidden) as caught:
        await uploads.receive(late.token, body(DATA))
    assert "expired" in caught.value.message
    with pytest.raises(Forbidden) as forged:
        await uploads.receive("made-up", body(DATA))
    assert "not valid" in forged.value.message


async def test_bytes_that_miss_the_promised_checksum_are_refused(
    uploads: SignedUploads, tenant: TenantId, storage: Storage
) -> None:
    granted = await uploads.grant(
        tenant, filename="a", purpose="batch-api", checksum=hashlib.sha256(b"other").hexdigest()
    )
    with pytest.raises(InvalidRequest) as caught:
        await uploads.receive(granted.token, body(DATA))
    assert (caught.value.code, caught.value.param) == ("checksum_mismatch", "checksum")
    assert storage.blob_keys(f"files/{granted.file_id}") == []
    with pytest.raises(NotFound):
        await uploads.preprocess(tenant, granted.file_id)


async def test_a_file_already_held_is_refused_by_its_checksum(
    uploads: SignedUploads, tenant: TenantId
) -> None:
    digest = hashlib.sha256(DATA).hexdigest()
    first = await uploads.grant(tenant, filename="a", purpose="batch-api", checksum=digest)
    await uploads.receive(first.token, body(DATA))
    for again in (digest, digest.upper()):
        with pytest.raises(DuplicateFile) as caught:
            await uploads.grant(tenant, filename="b", purpose="batch-api", checksum=again)
        assert (caught.value.file_id, caught.value.code) == (first.file_id, "file_exists")
    # Another purpose, or another tenant, is another file.
    await uploads.grant(tenant, filename="c", purpose="user_data", checksum=digest)
    await uploads.grant(
        TenantId(f"{tenant}-other"), filename="d", purpose="batch-api", checksum=digest
    )
    with pytest.raises(DuplicateFile):
        await uploads.initiate(
            tenant,
            filename="e",
            purpose="batch-api",
            file_size=len(DATA),
            num_parts=1,
            mime_type="application/jsonl",
            checksum=digest,
        )


@pytest.mark.parametrize("checksum", ["abc", "g" * 64, "0" * 63])
async def test_a_checksum_is_64_hex_digits(
    uploads: SignedUploads, tenant: TenantId, checksum: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await uploads.grant(tenant, filename="a", purpose="batch-api", checksum=checksum)
    assert (caught.value.code, caught.value.param) == ("invalid_value", "checksum")


async def test_a_single_put_past_the_threshold_is_told_to_use_parts(
    uploads: SignedUploads, tenant: TenantId, storage: Storage
) -> None:
    granted = await uploads.grant(tenant, filename="big", purpose="batch-api")
    with pytest.raises(PayloadTooLarge) as caught:
        await uploads.receive(granted.token, body(b"x" * 1000, b"x" * 100))
    assert "multipart/initiate" in caught.value.message
    assert storage.blob_keys(f"files/{granted.file_id}") == []


async def initiate(
    uploads: SignedUploads, tenant: TenantId, sizes: list[int], checksum: str | None = None
) -> tuple[Upload, list[tuple[int, str]]]:
    granted = await uploads.initiate(
        tenant,
        filename="big.jsonl",
        purpose="batch-api",
        file_size=sum(sizes),
        num_parts=len(sizes),
        mime_type="application/jsonl",
        checksum=checksum,
    )
    return granted.upload, granted.parts


async def test_multipart_assembles_parts_by_number_after_etags_check_out(
    uploads: SignedUploads, tenant: TenantId, storage: Storage
) -> None:
    pieces = [b'{"n": 1}\n', b'{"n": 2}\n', b'{"n": 3}\n']
    digest = hashlib.sha256(b"".join(pieces)).hexdigest()
    upload, parts = await initiate(uploads, tenant, [len(p) for p in pieces], checksum=digest)
    assert [n for n, _ in parts] == [1, 2, 3]
    etags = {}
    # Parts may arrive in any order.
    for (number, token), piece in reversed(list(zip(parts, pieces, strict=True))):
        received = await uploads.receive(token, body(piece))
        assert received.file is None
        etags[number] = received.etag
    listed = [(n, f'"{etags[n]}"') for n in (1, 2, 3)]
    for wrong, code in [
        (listed[::-1], "invalid_value"),
        ([listed[0], listed[0], listed[2]], "invalid_value"),
        ([], "invalid_value"),
        ([listed[0], (2, '"0000"'), listed[2]], "etag_mismatch"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            await uploads.complete(tenant, upload.id, upload.file_id, wrong)
        assert (caught.value.code, caught.value.param) == (code, "parts")
    with pytest.raises(InvalidRequest) as other_file:
        await uploads.complete(tenant, upload.id, "file-other", listed)
    assert other_file.value.param == "file_id"
    record = await uploads.complete(tenant, upload.id, upload.file_id, listed)
    assert (record.id, record.sha256, record.line_count) == (upload.file_id, digest, 3)
    assert storage.blob_keys(f"uploads/{upload.id}") == []


async def test_a_part_never_uploaded_cannot_be_listed(
    uploads: SignedUploads, tenant: TenantId
) -> None:
    upload, parts = await initiate(uploads, tenant, [3, 3])
    first = await uploads.receive(parts[0][1], body(b"abc"))
    with pytest.raises(InvalidRequest) as caught:
        await uploads.complete(tenant, upload.id, upload.file_id, [(1, first.etag), (2, "x")])
    assert "never uploaded" in caught.value.message


async def test_an_aborted_multipart_upload_takes_no_more_parts(
    uploads: SignedUploads, tenant: TenantId, storage: Storage
) -> None:
    upload, parts = await initiate(uploads, tenant, [3, 3])
    await uploads.receive(parts[0][1], body(b"abc"))
    with pytest.raises(InvalidRequest):
        await uploads.abort(tenant, upload.id, "file-other")
    assert (await uploads.abort(tenant, upload.id, upload.file_id)).status.value == "cancelled"
    assert storage.blob_keys(f"uploads/{upload.id}") == []
    with pytest.raises(Conflict) as caught:
        await uploads.receive(parts[1][1], body(b"def"))
    assert caught.value.code == "upload_not_pending"


@pytest.mark.parametrize(
    ("file_size", "num_parts", "param"),
    [
        (-1, 1, "file_size"),
        (64 * 1024**3, 1, "file_size"),
        (10, 0, "num_parts"),
        (10, 11, "num_parts"),
        (10**9, MAX_PARTS + 1, "num_parts"),
    ],
)
async def test_bad_multipart_sizes_are_refused(
    uploads: SignedUploads, tenant: TenantId, file_size: int, num_parts: int, param: str
) -> None:
    uploads.settings = uploads.settings.model_copy(update={"max_upload_bytes": 2 * 10**9})
    with pytest.raises(InvalidRequest) as caught:
        await uploads.initiate(
            tenant,
            filename="x",
            purpose="batch-api",
            file_size=file_size,
            num_parts=num_parts,
            mime_type="application/jsonl",
        )
    assert (caught.value.code, caught.value.param) == ("invalid_value", param)


async def test_a_file_made_otherwise_is_counted_once_on_demand(
    uploads: SignedUploads, service: Service, tenant: TenantId, storage: Storage
) -> None:
    upload = await service.create_upload(
        tenant, filename="u", purpose="batch-api", bytes=len(DATA), mime_type="text/plain"
    )
    sink = service.new_part_sink(upload)
    await sink.write(DATA)
    part = await service.add_upload_part(tenant, upload.id, sink)
    record = await service.finish_upload(upload, [part])
    await storage.store.set_line_count(record.id, None)  # type: ignore[arg-type]
    assert (await service.get_file(tenant, record.id)).line_count is None
    assert (await uploads.preprocess(tenant, record.id)).line_count == 2
    assert (await service.get_file(tenant, record.id)).line_count == 2
