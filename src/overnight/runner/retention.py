"""The retention sweep: delete what has expired.

Files carry `expires_at` (OpenAI's `expires_after` on upload, a batch's
`output_expires_after` on its result files, or `default_output_expires_after`).
An expired file answers 404 at once, whatever this sweep has done; the
sweep then deletes its record and its bytes, every `retention_interval`.
A file that an unfinished batch still reads is kept until that batch ends.
Uploads left pending past their expiry are marked expired and their parts'
bytes dropped. Idempotency keys older than a day are forgotten (an old one
is ignored at once, whatever this sweep has done).

The record goes first and the bytes second, as in a user's delete: a crash
in between leaves bytes no record points to, never a record without bytes.
Several workers may sweep at once; each deletion is guarded in the store,
so they only ever repeat harmless blob deletes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from overnight.blobs import BlobStore
from overnight.store.contracts import RetentionStore

log = logging.getLogger("overnight.runner")

#: Files deleted per store query; a sweep loops until none is left.
SWEEP_BATCH = 500


@dataclass(frozen=True, slots=True)
class Swept:
    files: int = 0
    uploads: int = 0
    idempotency_keys: int = 0


async def sweep_once(store: RetentionStore, blobs: BlobStore, now: int) -> Swept:
    """Delete every file expired by `now` and drop expired uploads' parts."""
    deleted = 0
    while True:
        expired = await store.expired_files(now, SWEEP_BATCH)
        progress = 0
        for record in expired:
            if await store.delete_expired_file(record.id, now):
                await blobs.delete(record.blob_key)
                deleted += 1
                progress += 1
        if len(expired) < SWEEP_BATCH or progress == 0:
            break
    uploads = await store.expire_uploads(now)
    for upload in uploads:
        await blobs.delete_prefix(f"uploads/{upload.id}")
        await store.delete_parts(upload.id)
    keys = await store.delete_expired_idempotency_keys(now)
    return Swept(deleted, len(uploads), keys)


async def sweep_forever(store: RetentionStore, blobs: BlobStore, interval: float) -> None:
    """The worker's side task: sweep, then sleep `interval` seconds. A
    failed sweep is logged and retried at the next turn; a store that stays
    down shows in the worker's other loops."""
    while True:
        try:
            swept = await sweep_once(store, blobs, int(time.time()))
        except Exception:
            log.exception("the retention sweep failed; it runs again in %.0f s", interval)
        else:
            if swept.files or swept.uploads:
                log.info(
                    "retention: deleted %d expired files, expired %d uploads",
                    swept.files,
                    swept.uploads,
                )
        await asyncio.sleep(interval)
