"""What each part of overnight may ask of the store: one Protocol per consumer.

Consumers type against these, never against `SqlStore`, so each names only
the operations it uses, and a second implementation (an in-memory one for
unit tests, say) has a written contract to meet. `SqlStore` satisfies every
one structurally; `sql.py` has mypy check it, and `tests/store/` runs the
contract suite against SQLite and PostgreSQL.

    ApiStore        service.py, signed_uploads.py: files, uploads, grants, batches
      IdempotencyStore  idempotency.py: Idempotency-Key claims and answers
    KeyStore        tenants.py: API keys (by SHA-256)
      AdminStore      admin.py: tenants, their quotas and usage
    RunnerStore     runner/: claims, leases, progress, finishing
      RetentionStore  runner/retention.py: what has expired
    DashboardStore  ui/: snapshots, backlog, workers, browser sessions
    WebhookStore    webhooks/endpoints.py: endpoints, their secrets, their log
    DeliveryStore   webhooks/sender.py: claiming deliveries, recording attempts
    Store           all of the above, and opening and closing: runtime.py, cli.py

The rules every operation keeps: each is one transaction; `tenant` None
means every tenant (the runner, an admin), otherwise a caller sees only its
tenant's rows; a guard that finds the row moved by someone else is an
answer (None, False, Conflict), never a silent write; and a database
failure raises `StorageError` (`StorageUnavailable` when a retry may pass),
never a driver's or SQLAlchemy's exception.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

from overnight.domain.batch import Batch
from overnight.domain.chunk import Chunk, ChunkKey, ChunkWork, Tally
from overnight.domain.dashboard import Snapshot, UiSession, WorkerView
from overnight.domain.files import FilePurpose, FileRecord, Upload, UploadPart, UploadStatus
from overnight.domain.grants import UploadGrant
from overnight.domain.idempotency import IdempotencyRecord
from overnight.domain.keys import ApiKey
from overnight.domain.lines import LineError
from overnight.domain.quotas import QuotaOverrides, Quotas, TenantUsage
from overnight.domain.status import BatchStatus, StopReason
from overnight.domain.validation import ChunkRange
from overnight.domain.webhooks import (
    AttemptResult,
    Delivery,
    DeliveryAttempt,
    SigningSecrets,
    WebhookEndpoint,
)
from overnight.types import BatchId, FileId, TenantId, WorkerId

__all__ = [
    "AdminStore",
    "ApiStore",
    "DashboardStore",
    "DeliveryStore",
    "IdempotencyStore",
    "KeyStore",
    "RetentionStore",
    "RunnerStore",
    "Store",
    "WebhookStore",
]


class IdempotencyStore(Protocol):
    async def claim_idempotency_key(
        self, tenant: TenantId, key: str, route: str, now: int
    ) -> IdempotencyRecord | None:
        """None if this call claimed the key, else the holder's record."""
        ...

    async def answer_idempotency_key(
        self,
        claimed: IdempotencyRecord,
        *,
        request_hash: str,
        status_code: int,
        body: bytes,
        object_id: str | None,
    ) -> None:
        """Store the answer, only on the claim this request made."""
        ...

    async def release_idempotency_key(self, claimed: IdempotencyRecord) -> None: ...


class ApiStore(IdempotencyStore, Protocol):
    # -- files
    async def insert_file(self, record: FileRecord, created_us: int) -> None: ...

    async def get_file(
        self, tenant: TenantId | None, file_id: str, *, live_at: int | None = None
    ) -> FileRecord | None:
        """`live_at` hides files that expired by then."""
        ...

    async def list_files(
        self,
        tenant: TenantId | None,
        *,
        purpose: str | None,
        newest_first: bool,
        after: str | None,
        limit: int,
        live_at: int | None = None,
    ) -> list[FileRecord] | None:
        """A page after the cursor `after`; None if the cursor names no file
        this caller can see."""
        ...

    async def delete_file(
        self, tenant: TenantId | None, file_id: str, *, live_at: int | None = None
    ) -> FileRecord | None:
        """The deleted record, or None; Conflict while a batch reads it."""
        ...

    async def find_file_by_checksum(
        self, tenant: TenantId, sha256: str, purpose: FilePurpose, *, live_at: int
    ) -> FileRecord | None: ...

    async def set_line_count(self, file_id: FileId, line_count: int) -> None: ...

    # -- uploads and their parts
    async def insert_upload(self, upload: Upload) -> None: ...

    async def get_upload(self, tenant: TenantId | None, upload_id: str) -> Upload | None: ...

    async def insert_part(self, part: UploadPart) -> None:
        """Conflict unless the upload is pending."""
        ...

    async def list_parts(self, upload_id: str) -> list[UploadPart]: ...

    async def complete_upload(self, upload_id: str, record: FileRecord, created_us: int) -> None:
        """Complete a pending upload and create its file; Conflict otherwise."""
        ...

    async def set_upload_status(
        self, upload_id: str, status: UploadStatus, *, expected: UploadStatus
    ) -> bool:
        """True if the upload was `expected` and is now `status`."""
        ...

    async def delete_parts(self, upload_id: str) -> None: ...

    # -- upload grants (one-time URLs, stored as hashes)
    async def insert_grants(
        self, grants: Sequence[UploadGrant], *, forget_before: int, upload: Upload | None = None
    ) -> None: ...

    async def use_grant(self, token_hash: str, now: int) -> tuple[bool, UploadGrant | None]:
        """(True, grant) for the one call that spends it."""
        ...

    # -- batches
    async def insert_batch(
        self,
        batch: Batch,
        created_us: int,
        *,
        default_quotas: Quotas | None = None,
        adding: int = 0,
    ) -> None:
        """With `default_quotas`, LimitExceeded if the tenant would exceed them."""
        ...

    async def get_batch(self, tenant: TenantId | None, batch_id: str) -> Batch | None: ...

    async def chunks_of(self, batch_id: BatchId) -> list[Chunk]:
        """A batch's chunks in order (the results read so far need them)."""
        ...

    async def list_batches(
        self,
        tenant: TenantId | None,
        *,
        after: str | None,
        limit: int,
        newest_first: bool = True,
        status: str | None = None,
        model: str | None = None,
        dialect: str | None = None,
    ) -> list[Batch] | None:
        """A page after the cursor `after`; None if it names no visible
        batch. `status`, `model`, `dialect`: only batches matching each given."""
        ...

    async def request_cancel(
        self, tenant: TenantId | None, batch_id: str, now: int
    ) -> Batch | None:
        """The batch, cancelled or cancelling; None if there is none;
        Conflict if it already ended otherwise."""
        ...

    async def delete_batch(
        self, tenant: TenantId | None, batch_id: str, file_ids: Sequence[FileId]
    ) -> list[FileRecord] | None:
        """Delete an ended batch with its chunks and the records of
        `file_ids`; the deleted records, or None if there is no such ended
        batch."""
        ...


class KeyStore(Protocol):
    async def insert_api_key(self, key: ApiKey) -> None: ...

    async def find_api_key(self, digest: str) -> ApiKey | None:
        """The active key with this SHA-256."""
        ...

    async def has_api_keys(self) -> bool:
        """Whether any key was ever made, revoked ones included."""
        ...

    async def list_api_keys(
        self, tenant: str | None = None, *, include_revoked: bool = False
    ) -> list[ApiKey]: ...

    async def revoke_api_keys(
        self, now: int, *, key_id: str | None = None, tenant: str | None = None
    ) -> list[ApiKey]:
        """The keys this call revoked."""
        ...


class AdminStore(KeyStore, Protocol):
    async def quota_overrides(self, tenant: str) -> QuotaOverrides: ...

    async def set_quota_overrides(
        self, tenant: str, overrides: QuotaOverrides, now: int
    ) -> None: ...

    async def tenant_usage(self, tenant: str) -> TenantUsage: ...

    async def known_tenants(self) -> set[str]:
        """Every tenant with a key, a quota, a file or a batch."""
        ...


class RetentionStore(Protocol):
    async def expired_files(self, now: int, limit: int) -> list[FileRecord]:
        """Expired files that no unfinished batch reads."""
        ...

    async def delete_expired_file(self, file_id: FileId, now: int) -> bool:
        """True if this call deleted it (no batch started reading it meanwhile)."""
        ...

    async def expire_uploads(self, now: int) -> list[Upload]:
        """The pending uploads this call marked expired."""
        ...

    async def delete_parts(self, upload_id: str) -> None: ...

    async def delete_expired_idempotency_keys(self, now: int) -> int: ...


class RunnerStore(RetentionStore, Protocol):
    """Every write to held work is fenced: by `worker` on a batch's lease,
    by `worker` and `attempt` on a chunk's. A fenced write that finds the
    lease gone changes nothing and says so (None, False, or a smaller set)."""

    # -- workers and leases
    async def heartbeat(
        self, worker: WorkerId, now: float, ttl: float, running: Collection[ChunkKey] = ()
    ) -> int:
        """Renew what `worker` holds; the number of live workers."""
        ...

    async def counted_by_all(self, worker: WorkerId, now: float, ttl: float) -> bool: ...

    async def release_leases(self, worker: WorkerId, *, died: bool = False) -> None: ...

    # -- batches
    async def expire_due(self, now: int) -> list[BatchId]: ...

    async def claim_validation(self, worker: WorkerId, now: float, ttl: float) -> Batch | None: ...

    async def claim_finalization(
        self, worker: WorkerId, now: float, ttl: float
    ) -> Batch | None: ...

    async def start_batch(
        self,
        batch_id: BatchId,
        worker: WorkerId,
        *,
        requests: int,
        model: str | None,
        chunk_ranges: Sequence[ChunkRange],
        now: int,
        grouped_blob_key: str | None = None,
    ) -> BatchStatus | None: ...

    async def fail_batch(
        self, batch_id: BatchId, worker: WorkerId, errors: Sequence[LineError], now: int
    ) -> BatchStatus | None: ...

    async def release_batch(
        self, batch_id: BatchId, worker: WorkerId, *, crashed: bool = False
    ) -> None: ...

    async def finish_batch(
        self,
        batch_id: BatchId,
        worker: WorkerId,
        *,
        status: BatchStatus,
        output: FileRecord | None,
        errors: FileRecord | None,
        never_ran: int,
        now: int,
        created_us: int,
        stopped: int | None = None,
    ) -> bool: ...

    async def stop_reasons(self, batch_ids: Iterable[BatchId]) -> dict[BatchId, StopReason]: ...

    async def get_file(
        self, tenant: TenantId | None, file_id: str, *, live_at: int | None = None
    ) -> FileRecord | None: ...

    # -- chunks
    async def claim_chunk(
        self,
        worker: WorkerId,
        now: float,
        ttl: float,
        *,
        urgent_within: float = 3600.0,
        idle_only: bool = False,
        running: Collection[ChunkKey] = (),
    ) -> ChunkWork | None: ...

    async def claim_chunks(
        self,
        worker: WorkerId,
        now: float,
        ttl: float,
        count: int,
        *,
        urgent_within: float = 3600.0,
        idle_only: bool = False,
        running: Collection[ChunkKey] = (),
    ) -> list[ChunkWork]:
        """Up to `count` chunks in one transaction, in the order as many
        `claim_chunk` calls would take them."""
        ...

    async def release_chunk(
        self, key: ChunkKey, worker: WorkerId, attempt: int, *, crashed: bool = False
    ) -> None: ...

    async def record_progress(
        self,
        key: ChunkKey,
        worker: WorkerId,
        attempt: int,
        tally: Tally,
        previous: Tally,
        *,
        done: bool,
        now: int,
    ) -> bool | None:
        """None if the lease is lost, else whether the batch is now finalizing."""
        ...

    async def record_progress_many(
        self, worker: WorkerId, moves: Sequence[tuple[ChunkKey, int, Tally, Tally]]
    ) -> set[ChunkKey]:
        """The chunks whose lease the worker still held (only those moved)."""
        ...

    async def chunks_of(self, batch_id: BatchId) -> list[Chunk]: ...

    # -- the dashboard's throughput chart
    async def record_snapshots(self, now: int, min_interval: int) -> int:
        """Snapshot the counts of each running batch whose last snapshot is
        older than `snapshot_interval`; the number taken."""
        ...


class DashboardStore(Protocol):
    """What the dashboard reads beside `ApiStore` and `AdminStore`."""

    async def batch_snapshots(self, batch_id: BatchId) -> list[Snapshot]:
        """Oldest first."""
        ...

    async def queued_by_model(self, tenant: TenantId | None = None) -> dict[str | None, int]:
        """Lines not yet run of the running batches, by batch model."""
        ...

    async def worker_views(self, now: float, ttl: float) -> list[WorkerView]: ...

    async def chunks_leased(self) -> int: ...

    async def count_batches_by_status(self) -> dict[str, int]: ...

    async def live_workers(self, now: float, ttl: float) -> list[WorkerId]: ...

    async def insert_ui_session(self, session: UiSession) -> None:
        """Drops expired sessions on the way."""
        ...

    async def find_ui_session(self, token_hash: str, now: int) -> UiSession | None:
        """The session, unless it expired by `now`."""
        ...

    async def delete_ui_session(self, token_hash: str) -> bool: ...


class WebhookStore(Protocol):
    """Endpoints never come back with their secrets: those go in, and only
    `DeliveryStore.claim_deliveries` reads them, to sign."""

    async def insert_webhook(self, endpoint: WebhookEndpoint, secrets: SigningSecrets) -> None: ...

    async def list_webhooks(self, tenant: str | None = None) -> list[WebhookEndpoint]: ...

    async def get_webhook(self, endpoint_id: str) -> WebhookEndpoint | None: ...

    async def delete_webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        """The removed endpoint (its deliveries and log go with it), or None."""
        ...

    async def rotate_webhook_secret(
        self, endpoint_id: str, secret: str, *, previous_until: int
    ) -> WebhookEndpoint | None:
        """`secret` signs from now on, the replaced one too until `previous_until`."""
        ...

    async def enable_webhook(self, endpoint_id: str) -> WebhookEndpoint | None: ...

    async def sync_config_webhooks(
        self, configured: Sequence[tuple[WebhookEndpoint, SigningSecrets]]
    ) -> None:
        """The config's endpoints become exactly these."""
        ...

    async def webhook_attempts(
        self, endpoint_id: str, *, after: int | None = None, limit: int = 20
    ) -> list[DeliveryAttempt]:
        """The delivery log, newest first, before the attempt id `after`."""
        ...


class DeliveryStore(Protocol):
    """Deliveries are written by the transactions that end batches (the
    outbox); the sender only claims them and records what happened."""

    async def claim_deliveries(
        self, worker: WorkerId, now: float, ttl: float, limit: int
    ) -> list[Delivery]:
        """Due deliveries of enabled endpoints, each leased for one attempt."""
        ...

    async def record_attempt(
        self,
        delivery: Delivery,
        worker: WorkerId,
        result: AttemptResult,
        *,
        retry_at: float | None,
        now: float,
        disable_after: float,
    ) -> bool:
        """Log it; delivered, due at `retry_at`, or (None) failed for good.
        True if this failure disabled the endpoint."""
        ...

    async def delete_old_webhook_records(self, before: float) -> int: ...


class Store(
    ApiStore, AdminStore, RunnerStore, WebhookStore, DeliveryStore, DashboardStore, Protocol
):
    """The whole store, for whoever opens it and hands its parts out."""

    async def close(self) -> None: ...

    async def release_all_leases(self) -> None:
        """At start-up of the only process on a SQLite store."""
        ...
