"""Webhooks: endpoints, the outbox of deliveries, and the log of attempts.

One mixin of `SqlStore`, plus `record_batch_event`, which every transaction
that ends a batch runs (store/batches.py), so the event is written with the
status change or not at all: a crash between the two cannot lose it.

Deliveries are claimed like chunks: `attempts` counts claims and fences the
claimer's writes, a lease that lapses (its worker died mid-attempt) makes
the delivery due again, and PostgreSQL claims with FOR UPDATE SKIP LOCKED,
so with many workers each attempt is made by one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from overnight import _json
from overnight._ids import new_event_id
from overnight.domain.dialects import dialect_named
from overnight.domain.status import BatchStatus
from overnight.domain.webhooks import (
    AttemptResult,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    EndpointSource,
    EventType,
    SigningSecrets,
    WebhookEndpoint,
    disable_reason,
    event_body,
    event_of,
)
from overnight.store._base import StoreBase
from overnight.store.schema import batches, webhook_attempts, webhook_deliveries, webhook_endpoints
from overnight.types import BatchId, TenantId, WorkerId

endpoints, deliveries, attempts = webhook_endpoints, webhook_deliveries, webhook_attempts

#: What a config endpoint keeps when the config file changes it.
_HEALTH_AND_BIRTH = ("id", "created_at", "failing_since", "disabled_at", "disabled_reason")


class WebhooksMixin(StoreBase):
    # -------------------------------------------------------------- endpoints

    async def insert_webhook(self, endpoint: WebhookEndpoint, secrets: SigningSecrets) -> None:
        async with self._write() as conn:
            await conn.execute(insert(endpoints).values(**_endpoint_values(endpoint, secrets)))

    async def list_webhooks(self, tenant: str | None = None) -> list[WebhookEndpoint]:
        query = select(endpoints).order_by(endpoints.c.created_at, endpoints.c.id)
        if tenant is not None:
            query = query.where(endpoints.c.tenant == tenant)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_to_endpoint(r) for r in rows]

    async def get_webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        async with self._read() as conn:
            row = (
                await conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id))
            ).first()
        return _to_endpoint(row) if row else None

    async def delete_webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        """Remove an endpoint with its deliveries (sent or not) and its log."""
        async with self._write() as conn:
            row = (
                await conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id))
            ).first()
            if row is None:
                return None
            await _delete_endpoints(conn, [endpoint_id])
        return _to_endpoint(row)

    async def rotate_webhook_secret(
        self, endpoint_id: str, secret: str, *, previous_until: int
    ) -> WebhookEndpoint | None:
        """`secret` signs from now on; the one it replaces signs beside it
        until `previous_until`."""
        async with self._write() as conn:
            changed = await conn.execute(
                update(endpoints)
                .where(endpoints.c.id == endpoint_id)
                .values(
                    previous_secret=endpoints.c.secret,
                    previous_until=previous_until,
                    secret=secret,
                )
            )
            if changed.rowcount != 1:
                return None
            row = (await conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id))).one()
        return _to_endpoint(row)

    async def enable_webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        """Send to a disabled endpoint again, its failures forgotten."""
        async with self._write() as conn:
            changed = await conn.execute(
                update(endpoints)
                .where(endpoints.c.id == endpoint_id)
                .values(disabled_at=None, disabled_reason=None, failing_since=None)
            )
            if changed.rowcount != 1:
                return None
            row = (await conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id))).one()
        return _to_endpoint(row)

    async def sync_config_webhooks(
        self, configured: Sequence[tuple[WebhookEndpoint, SigningSecrets]]
    ) -> None:
        """Make the config's endpoints exactly `configured`: add the new,
        update the changed (their health kept), remove those no longer
        listed. Replicas starting at once may all run it: an endpoint
        another one inserted first is updated instead."""
        wanted = {endpoint.id: (endpoint, secrets) for endpoint, secrets in configured}
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        async with self._write() as conn:
            stored = {
                r.id
                for r in await conn.execute(
                    select(endpoints.c.id).where(endpoints.c.source == EndpointSource.CONFIG.value)
                )
            }
            await _delete_endpoints(conn, sorted(stored - wanted.keys()))
            for endpoint_id, (endpoint, secrets) in wanted.items():
                values = _endpoint_values(endpoint, secrets)
                inserted = await conn.execute(
                    dialect.insert(endpoints)
                    .values(**values)
                    .on_conflict_do_nothing(index_elements=["id"])
                )
                if inserted.rowcount == 1:
                    continue
                for kept in _HEALTH_AND_BIRTH:
                    del values[kept]
                await conn.execute(
                    update(endpoints).where(endpoints.c.id == endpoint_id).values(**values)
                )

    async def webhook_attempts(
        self, endpoint_id: str, *, after: int | None = None, limit: int = 20
    ) -> list[DeliveryAttempt]:
        """An endpoint's delivery log, newest first; `after` is the id of
        the last attempt of the previous page."""
        query = select(attempts).where(attempts.c.endpoint_id == endpoint_id)
        if after is not None:
            query = query.where(attempts.c.id < after)
        query = query.order_by(attempts.c.id.desc()).limit(limit)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_to_attempt(r) for r in rows]

    # ------------------------------------------------------------- deliveries

    async def claim_deliveries(
        self, worker: WorkerId, now: float, ttl: float, limit: int
    ) -> list[Delivery]:
        """Lease up to `limit` due deliveries of enabled endpoints, oldest
        due first, each for one attempt (numbered by `Delivery.attempt`)."""
        due = (
            deliveries.c.status == DeliveryStatus.PENDING.value,
            deliveries.c.next_attempt_at <= now,
            or_(deliveries.c.lease_owner.is_(None), deliveries.c.lease_expires_at < now),
        )
        # A look on a read connection first: most polls find nothing, and
        # on SQLite they need not queue for the one writer to say so.
        async with self._read() as conn:
            if (
                await conn.execute(select(deliveries.c.event_id).where(*due).limit(1))
            ).first() is None:
                return []
        async with self._write() as conn:
            keys = [
                (r.event_id, r.endpoint_id)
                for r in await conn.execute(
                    select(deliveries.c.event_id, deliveries.c.endpoint_id)
                    .select_from(
                        deliveries.join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
                    )
                    .where(*due, endpoints.c.disabled_at.is_(None))
                    .order_by(deliveries.c.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True, of=deliveries)
                )
            ]
            if not keys:
                return []
            claimed = tuple_(deliveries.c.event_id, deliveries.c.endpoint_id).in_(keys)
            await conn.execute(
                update(deliveries)
                .where(claimed)
                .values(
                    attempts=deliveries.c.attempts + 1,
                    lease_owner=worker,
                    lease_expires_at=now + ttl,
                )
            )
            rows = (
                await conn.execute(
                    select(
                        deliveries,
                        endpoints.c.url,
                        endpoints.c.secret,
                        endpoints.c.previous_secret,
                        endpoints.c.previous_until,
                    )
                    .select_from(
                        deliveries.join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
                    )
                    .where(claimed)
                    .order_by(deliveries.c.next_attempt_at)
                )
            ).all()
        return [_to_delivery(r, now) for r in rows]

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
        """Log an attempt and move its delivery on: delivered on a 2xx,
        else due again at `retry_at`, or failed for good when that is None.
        The endpoint's run of failures starts or ends with it, and one
        failing for `disable_after` seconds is disabled. True if this
        attempt disabled it. A claim that lapsed meanwhile (another worker
        holds the delivery now) still logs, but moves nothing."""
        if result.succeeded:
            moved: dict[str, Any] = {
                "status": DeliveryStatus.DELIVERED.value,
                "delivered_at": int(now),
            }
        elif retry_at is None:
            moved = {"status": DeliveryStatus.FAILED.value}
        else:
            moved = {"next_attempt_at": retry_at}
        async with self._write() as conn:
            await conn.execute(
                insert(attempts).values(
                    endpoint_id=delivery.endpoint_id,
                    event_id=delivery.event_id,
                    event_type=delivery.event_type.value,
                    batch_id=delivery.batch_id,
                    attempt=delivery.attempt,
                    at=now,
                    status_code=result.status_code,
                    latency_ms=result.latency_ms,
                    error=result.error,
                )
            )
            await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.event_id == delivery.event_id,
                    deliveries.c.endpoint_id == delivery.endpoint_id,
                    deliveries.c.attempts == delivery.attempt,
                    deliveries.c.lease_owner == worker,
                )
                .values(lease_owner=None, lease_expires_at=None, **moved)
            )
            this = endpoints.c.id == delivery.endpoint_id
            if result.succeeded:
                await conn.execute(
                    update(endpoints)
                    .where(this, endpoints.c.failing_since.is_not(None))
                    .values(failing_since=None)
                )
                return False
            await conn.execute(
                update(endpoints)
                .where(this, endpoints.c.failing_since.is_(None))
                .values(failing_since=int(now))
            )
            row = (
                await conn.execute(
                    select(endpoints.c.failing_since, endpoints.c.disabled_at).where(this)
                )
            ).first()
            if (
                row is None
                or row.disabled_at is not None
                or now - row.failing_since < disable_after
            ):
                return False
            await conn.execute(
                update(endpoints)
                .where(this, endpoints.c.disabled_at.is_(None))
                .values(
                    disabled_at=int(now),
                    disabled_reason=disable_reason(row.failing_since, int(now), result.describe()),
                )
            )
        return True

    async def delete_old_webhook_records(self, before: float) -> int:
        """Retention: drop deliveries that ended, and log lines, older than
        `before`; how many rows went."""
        async with self._write() as conn:
            ended = await conn.execute(
                delete(deliveries).where(
                    deliveries.c.status != DeliveryStatus.PENDING.value,
                    deliveries.c.created_at < before,
                )
            )
            logged = await conn.execute(delete(attempts).where(attempts.c.at < before))
        return int(ended.rowcount) + int(logged.rowcount)


async def record_batch_event(
    conn: AsyncConnection, batch_id: BatchId, status: BatchStatus, now: int
) -> None:
    """In the transaction that moved `batch_id` to the terminal `status`:
    one delivery of its event for each enabled endpoint of its tenant that
    listens for it. The body shows the batch id as the batch's dialect does."""
    event_type = event_of(status)
    batch = (
        await conn.execute(
            select(batches.c.tenant, batches.c.dialect).where(batches.c.id == batch_id)
        )
    ).one()
    listening = [
        r.id
        for r in await conn.execute(
            select(endpoints.c.id, endpoints.c.event_types).where(
                endpoints.c.tenant == batch.tenant, endpoints.c.disabled_at.is_(None)
            )
        )
        if event_type.value in _json.loads(r.event_types)
    ]
    if not listening:
        return
    event_id = new_event_id()
    body = event_body(
        event_id, event_type, now, dialect_named(batch.dialect).show_batch_id(batch_id)
    )
    await conn.execute(
        insert(deliveries),
        [
            {
                "event_id": event_id,
                "endpoint_id": endpoint_id,
                "tenant": batch.tenant,
                "event_type": event_type.value,
                "batch_id": batch_id,
                "body": body,
                "created_at": now,
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": float(now),
            }
            for endpoint_id in listening
        ],
    )


async def _delete_endpoints(conn: AsyncConnection, endpoint_ids: Sequence[str]) -> None:
    if not endpoint_ids:
        return
    await conn.execute(delete(attempts).where(attempts.c.endpoint_id.in_(endpoint_ids)))
    await conn.execute(delete(deliveries).where(deliveries.c.endpoint_id.in_(endpoint_ids)))
    await conn.execute(delete(endpoints).where(endpoints.c.id.in_(endpoint_ids)))


def _endpoint_values(endpoint: WebhookEndpoint, secrets: SigningSecrets) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "tenant": endpoint.tenant,
        "url": endpoint.url,
        "event_types": _json.dumps([e.value for e in endpoint.event_types]).decode(),
        "source": endpoint.source.value,
        "secret": secrets.current,
        "previous_secret": secrets.previous,
        "previous_until": secrets.previous_until,
        "created_at": endpoint.created_at,
        "failing_since": endpoint.failing_since,
        "disabled_at": endpoint.disabled_at,
        "disabled_reason": endpoint.disabled_reason,
    }


def _to_endpoint(row: Any) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        tenant=TenantId(row.tenant),
        url=row.url,
        event_types=tuple(EventType(e) for e in _json.loads(row.event_types)),
        created_at=row.created_at,
        source=EndpointSource(row.source),
        rotating_until=row.previous_until if row.previous_secret is not None else None,
        failing_since=row.failing_since,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
    )


def _to_delivery(row: Any, now: float) -> Delivery:
    signing = [row.secret]
    if row.previous_secret is not None and (row.previous_until is None or row.previous_until > now):
        signing.append(row.previous_secret)
    return Delivery(
        event_id=row.event_id,
        endpoint_id=row.endpoint_id,
        tenant=TenantId(row.tenant),
        event_type=EventType(row.event_type),
        batch_id=row.batch_id,
        body=bytes(row.body),
        created_at=row.created_at,
        attempt=row.attempts,
        url=row.url,
        secrets=tuple(signing),
    )


def _to_attempt(row: Any) -> DeliveryAttempt:
    return DeliveryAttempt(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=EventType(row.event_type),
        batch_id=row.batch_id,
        attempt=row.attempt,
        at=row.at,
        status_code=row.status_code,
        latency_ms=row.latency_ms,
        error=row.error,
    )
