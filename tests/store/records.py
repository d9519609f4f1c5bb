"""Records for the store contract suite, and the few steps that put a batch
where a test needs it (stored, validated into chunks, a chunk claimed).

Every helper goes through the `Store` Protocol only, as a consumer would.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from overnight.domain.batch import Batch
from overnight.domain.chunk import ChunkWork
from overnight.domain.files import FilePurpose, FileRecord, Upload, UploadPart
from overnight.domain.status import BatchStatus
from overnight.domain.validation import ChunkRange
from overnight.store import Store
from overnight.types import BatchId, FileId, PartId, TenantId, UploadId, WorkerId

#: The suite's "now", in unix seconds.
NOW = 1_800_000_000
TTL = 30.0
ACME = TenantId("acme")
GLOBEX = TenantId("globex")
ALICE = WorkerId("worker-alice")
BOB = WorkerId("worker-bob")

_created = itertools.count(NOW * 1_000_000)


def created_us() -> int:
    """A creation time in microseconds, later than every one before it."""
    return next(_created)


def file_record(
    tenant: TenantId = ACME,
    *,
    purpose: FilePurpose = FilePurpose.BATCH,
    created_at: int = NOW,
    expires_at: int | None = None,
    line_count: int | None = None,
    sha256: str = "ab" * 32,
) -> FileRecord:
    file_id = FileId(f"file-{uuid.uuid4()}")
    return FileRecord(
        id=file_id,
        tenant=tenant,
        filename="input.jsonl",
        purpose=purpose,
        bytes=1234,
        created_at=created_at,
        sha256=sha256,
        blob_key=f"files/{file_id}",
        expires_at=expires_at,
        line_count=line_count,
    )


async def add_file(store: Store, tenant: TenantId = ACME, **fields: Any) -> FileRecord:
    record = file_record(tenant, **fields)
    await store.insert_file(record, created_us())
    return record


def batch_of(
    file: FileRecord, *, window: int = 86_400, priority: int = 0, keep_output: int | None = None
) -> Batch:
    return Batch(
        id=BatchId(f"batch_{uuid.uuid4().hex}"),
        tenant=file.tenant,
        endpoint="/v1/chat/completions",
        input_file_id=file.id,
        completion_window="24h",
        status=BatchStatus.VALIDATING,
        created_at=NOW,
        expires_at=NOW + window,
        priority=priority,
        metadata={"team": "search"},
        input_bytes=file.bytes,
        output_expires_after=keep_output,
    )


async def add_batch(store: Store, tenant: TenantId = ACME, **fields: Any) -> Batch:
    """A new batch, validating, over a new file of its tenant."""
    batch = batch_of(await add_file(store, tenant), **fields)
    await store.insert_batch(batch, created_us())
    return batch


def ranges(chunks: int, lines: int = 10) -> list[ChunkRange]:
    """`chunks` chunks of `lines` lines, 100 bytes a line."""
    return [
        ChunkRange(
            index=i,
            start=i * lines * 100,
            end=(i + 1) * lines * 100,
            first_line=i * lines,
            requests=lines,
        )
        for i in range(chunks)
    ]


async def running_batch(
    store: Store,
    tenant: TenantId = ACME,
    *,
    chunks: int = 2,
    lines: int = 10,
    grouped_blob_key: str | None = None,
    **fields: Any,
) -> Batch:
    """A batch validated into `chunks` pending chunks (cut from
    `grouped_blob_key`, if given): in progress."""
    batch = await add_batch(store, tenant, **fields)
    claimed = await store.claim_validation(ALICE, NOW, TTL)
    assert claimed is not None and claimed.id == batch.id
    status = await store.start_batch(
        batch.id,
        ALICE,
        requests=chunks * lines,
        model="m",
        chunk_ranges=ranges(chunks, lines),
        now=NOW,
        grouped_blob_key=grouped_blob_key,
    )
    assert status is BatchStatus.IN_PROGRESS
    return batch


async def claim(store: Store, worker: WorkerId = ALICE, now: float = NOW) -> ChunkWork:
    work = await store.claim_chunk(worker, now, TTL)
    assert work is not None
    return work


def upload(tenant: TenantId = ACME, *, expires_at: int = NOW + 3600) -> Upload:
    return Upload(
        id=UploadId(f"upload_{uuid.uuid4().hex}"),
        tenant=tenant,
        filename="big.jsonl",
        purpose=FilePurpose.BATCH,
        bytes=2048,
        mime_type="application/jsonl",
        created_at=NOW,
        expires_at=expires_at,
    )


def part(of: Upload, number: int) -> UploadPart:
    return UploadPart(
        id=PartId(f"part_{uuid.uuid4().hex}"),
        upload_id=of.id,
        created_at=NOW,
        bytes=1024,
        blob_key=f"uploads/{of.id}/{number}",
        part_number=number,
        etag=f"etag-{number}",
    )
