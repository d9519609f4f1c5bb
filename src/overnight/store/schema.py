"""Table definitions (SQLAlchemy Core). Alembic migrations build exactly
this; `tests/store/test_migrations.py` checks that they agree.

Times are unix seconds (BIGINT) as the APIs show them; `created_us` adds
microseconds so that "newest first" and cursors are exact. Lease expiry is a
float (seconds) because leases are short.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("filename", String(1024), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("sha256", String(64), nullable=False),
    Column("blob_key", String(512), nullable=False),
    Column("line_count", BigInteger, nullable=True),
    Index("ix_files_tenant_created", "tenant", "created_us", "id"),
    # Together's dedupe: "a file with this checksum is already uploaded".
    Index("ix_files_tenant_sha256", "tenant", "sha256"),
    # The retention sweep: files whose time is up.
    Index("ix_files_expires_at", "expires_at"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False, index=True),
    Column("filename", String(1024), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("mime_type", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("file_id", String(64), nullable=True),
    Column("checksum", String(64), nullable=True),
    # The file this upload completes into expires this long after it is made.
    Column("file_expires_after", BigInteger, nullable=True),
)

upload_parts = Table(
    "upload_parts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("upload_id", String(64), nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("blob_key", String(512), nullable=False),
    Column("part_number", Integer, nullable=True),
    Column("etag", String(64), nullable=True),
)

# One row per signed upload URL (Together's upload flow). Only the token's
# SHA-256 is kept; `used_at` makes the URL single-use.
upload_grants = Table(
    "upload_grants",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("file_id", String(64), nullable=False),
    Column("filename", String(1024), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("checksum", String(64), nullable=True),
    Column("upload_id", String(64), nullable=True, index=True),
    Column("part_number", Integer, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("used_at", BigInteger, nullable=True),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("endpoint", String(128), nullable=False),
    Column("input_file_id", String(64), nullable=False, index=True),
    Column("completion_window", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("dialect", String(16), nullable=False),
    Column("model", String(255), nullable=True),
    Column("priority", Integer, nullable=False, default=0),
    Column("metadata_json", Text, nullable=True),
    Column("errors_json", Text, nullable=True),
    Column("input_bytes", BigInteger, nullable=False, default=0),
    Column("created_us", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("in_progress_at", BigInteger, nullable=True),
    Column("finalizing_at", BigInteger, nullable=True),
    Column("completed_at", BigInteger, nullable=True),
    Column("failed_at", BigInteger, nullable=True),
    Column("expired_at", BigInteger, nullable=True),
    Column("cancelling_at", BigInteger, nullable=True),
    Column("cancelled_at", BigInteger, nullable=True),
    Column("stop_reason", String(16), nullable=True),
    Column("total", BigInteger, nullable=False, default=0),
    Column("completed", BigInteger, nullable=False, default=0),
    Column("failed", BigInteger, nullable=False, default=0),
    # Of `failed`, the lines a cancel or an expiry kept from running.
    Column("stopped", BigInteger, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("cached_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("reasoning_tokens", BigInteger, nullable=False, default=0),
    Column("output_file_id", String(64), nullable=True),
    Column("error_file_id", String(64), nullable=True),
    Column("chunks_total", Integer, nullable=False, default=0),
    Column("chunks_done", Integer, nullable=False, default=0),
    # Who validates or finalises the batch (one worker at a time), and until when.
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    # Seconds the result files are kept after they are made (None: until deleted).
    Column("output_expires_after", BigInteger, nullable=True),
    # Times a worker died (or raised) validating or finalising it; reset
    # when validation ends. At `max_chunk_attempts` the batch fails.
    Column("crashes", Integer, nullable=False, default=0),
    # The grouped copy of the input its chunks are cut from, if one was
    # written at validation (runner/regroup.py); None: the input file.
    Column("grouped_blob_key", String(512), nullable=True),
    Index("ix_batches_tenant_created", "tenant", "created_us", "id"),
    # An admin's list of every tenant's batches, newest first (the dashboard),
    # and the same filtered by status, a page at a time without sorting.
    Index("ix_batches_created", "created_us", "id"),
    Index("ix_batches_status_created", "status", "created_us", "id"),
    # Quotas count a tenant's unfinished batches; a tenant's list filtered by
    # status pages on the same index.
    Index("ix_batches_tenant_status_created", "tenant", "status", "created_us", "id"),
)

chunks = Table(
    "chunks",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("start", BigInteger, nullable=False),
    Column("end", BigInteger, nullable=False),
    Column("first_line", BigInteger, nullable=False),
    Column("requests", Integer, nullable=False),
    # pending -> running -> done; pending -> skipped when the batch stops first.
    Column("status", String(16), nullable=False),
    # Copied from the batch so that claiming reads one table, in order.
    Column("tenant", String(128), nullable=False),
    Column("deadline", BigInteger, nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("created_us", BigInteger, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    # Claims, counted up on each: the lease's fencing token.
    Column("attempts", Integer, nullable=False, default=0),
    # Times a worker died (or raised) running it: its lease lapsed, or its
    # process exited. At `max_chunk_attempts` its unfinished lines fail.
    Column("crashes", Integer, nullable=False, default=0),
    Column("completed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("stopped", Integer, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("cached_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("reasoning_tokens", BigInteger, nullable=False, default=0),
    Index("ix_chunks_claim", "status", "deadline", "created_us", "idx"),
    Index("ix_chunks_owner", "lease_owner"),
    Index("ix_chunks_batch_status", "batch_id", "status", "idx"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("started_at", Float, nullable=False),
    # Live workers split each model's max_concurrency between them.
    Column("heartbeat_at", Float, nullable=False),
    # How many live workers this one counted at its last heartbeat.
    Column("view", Integer, nullable=True),
    Index("ix_workers_heartbeat", "heartbeat_at"),
)

# Keys made by `overnight keys create`. Only the key's SHA-256 is stored;
# `shown` is a short prefix for telling keys apart. A revoked key is kept
# (revoked_at set) so that the list shows what happened.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("shown", String(16), nullable=False),
    Column("role", String(16), nullable=False),
    Column("tenant", String(128), nullable=True, index=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

# Per-tenant quotas set through the admin API; a NULL keeps the default
# from the settings.
tenant_quotas = Table(
    "tenant_quotas",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("max_pending_batches", BigInteger, nullable=True),
    Column("max_enqueued_requests", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)

# One row per `Idempotency-Key` a tenant sent on a create (domain/idempotency.py).
# The primary key is the race guard: of two requests claiming one key at
# once, the second insert fails. No answer (status_code NULL) means the
# first request is still running.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("route", String(512), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("request_hash", String(64), nullable=True),
    Column("status_code", Integer, nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("object_id", String(64), nullable=True),
    # The retention sweep drops keys older than a day.
    Index("ix_idempotency_keys_created_at", "created_at"),
)

# Where a tenant's webhook events go (domain/webhooks.py). `secret` signs
# every attempt and is never listed; `previous_secret` also signs until
# `previous_until` (NULL: for as long as the config lists it) after a rotation.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False, index=True),
    Column("url", String(2048), nullable=False),
    # The event types it listens for, as a JSON list.
    Column("event_types", Text, nullable=False),
    Column("source", String(16), nullable=False),
    Column("secret", String(128), nullable=False),
    Column("previous_secret", String(128), nullable=True),
    Column("previous_until", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # When the current run of failed attempts began; NULL after a success.
    Column("failing_since", BigInteger, nullable=True),
    Column("disabled_at", BigInteger, nullable=True),
    Column("disabled_reason", Text, nullable=True),
)

# The outbox: one row per event and endpoint, written in the transaction
# that ends the batch. `attempts` counts claims and fences the claimer's
# writes, as a chunk's does; `body` is the exact bytes every attempt signs.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("endpoint_id", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("batch_id", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # pending -> delivered, or failed once its retry window closed.
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("delivered_at", BigInteger, nullable=True),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id"),
    Index("ix_webhook_deliveries_owner", "lease_owner"),
)

# The delivery log: one row per attempt, shown per endpoint by the admin API.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("endpoint_id", String(64), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("batch_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),
    Index("ix_webhook_attempts_at", "at"),
)

# A running batch's counts, sampled now and then, for the dashboard's
# throughput chart. Samples grow sparser as the batch ages (one per
# `elapsed / SNAPSHOTS_PER_BATCH` seconds, at least every few seconds), so a
# batch keeps a few hundred at most however long it runs.
batch_snapshots = Table(
    "batch_snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", String(64), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("completed", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Index("ix_batch_snapshots_batch", "batch_id", "at"),
)

# Dashboard sign-ins: one row per browser session. Only the cookie's
# SHA-256 is kept; `csrf` is the token every form of the session posts back.
# The key is checked again on each page (by its digest), so revoking it ends
# the session.
ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("tenant", String(128), nullable=True),
    Column("admin", Boolean, nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    # The SHA-256 of the API key it signed in with (NULL in local mode).
    Column("key_digest", String(64), nullable=True),
    Index("ix_ui_sessions_expires_at", "expires_at"),
)
