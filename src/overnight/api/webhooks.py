"""Webhook endpoints in the admin API, under `/admin/webhooks`, for admin
keys only: add one for a tenant (its secret is in this answer and never
again), list, show, remove, rotate the secret, enable one that was
disabled for failing, and read its delivery log.

Like the dialects it only translates: parse, call `Webhooks`, render.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from overnight.api import schemas
from overnight.api.auth import admin_of
from overnight.api.responses import JSONBytes, ok, runtime_of
from overnight.domain.webhooks import DeliveryAttempt
from overnight.webhooks.endpoints import MAX_LOG_PAGE
from overnight.webhooks.objects import endpoint_object, with_secret

router = APIRouter(
    tags=["webhooks"], default_response_class=JSONBytes, responses=schemas.error_responses()
)


def attempt_object(attempt: DeliveryAttempt) -> dict[str, Any]:
    return {
        "object": "webhook_delivery_attempt",
        "id": attempt.id,
        "event_id": attempt.event_id,
        "event_type": attempt.event_type.value,
        "batch_id": attempt.batch_id,
        "attempt": attempt.attempt,
        "at": attempt.at,
        "status_code": attempt.status_code,
        "latency_ms": attempt.latency_ms,
        "succeeded": attempt.succeeded,
        "error": attempt.error,
    }


class EndpointBody(BaseModel):
    """`event_types` left out listens for every batch event."""

    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(max_length=128)
    url: str = Field(max_length=2048)
    event_types: list[str] | None = Field(None, max_length=16)


@router.post("/webhooks", responses=ok(schemas.WebhookEndpointWithSecret))
async def add_webhook(request: Request, body: EndpointBody) -> JSONBytes:
    admin_of(request)
    made = await runtime_of(request).webhooks.add(body.tenant, body.url, body.event_types)
    return JSONBytes(with_secret(made))


@router.get("/webhooks", responses=ok(schemas.WebhookEndpointList))
async def list_webhooks(request: Request, tenant: str | None = None) -> JSONBytes:
    admin_of(request)
    endpoints = await runtime_of(request).webhooks.endpoints(tenant)
    return JSONBytes({"object": "list", "data": [endpoint_object(e) for e in endpoints]})


@router.get("/webhooks/{endpoint_id}", responses=ok(schemas.WebhookEndpointObject))
async def get_webhook(request: Request, endpoint_id: str) -> JSONBytes:
    admin_of(request)
    return JSONBytes(endpoint_object(await runtime_of(request).webhooks.get(endpoint_id)))


@router.delete("/webhooks/{endpoint_id}", responses=ok(schemas.WebhookEndpointDeleted))
async def remove_webhook(request: Request, endpoint_id: str) -> JSONBytes:
    admin_of(request)
    removed = await runtime_of(request).webhooks.remove(endpoint_id)
    return JSONBytes({"id": removed.id, "object": "webhook_endpoint", "deleted": True})


@router.post("/webhooks/{endpoint_id}/rotate", responses=ok(schemas.WebhookEndpointWithSecret))
async def rotate_webhook(request: Request, endpoint_id: str) -> JSONBytes:
    admin_of(request)
    return JSONBytes(with_secret(await runtime_of(request).webhooks.rotate(endpoint_id)))


@router.post("/webhooks/{endpoint_id}/enable", responses=ok(schemas.WebhookEndpointObject))
async def enable_webhook(request: Request, endpoint_id: str) -> JSONBytes:
    admin_of(request)
    return JSONBytes(endpoint_object(await runtime_of(request).webhooks.enable(endpoint_id)))


@router.get("/webhooks/{endpoint_id}/deliveries", responses=ok(schemas.WebhookAttemptList))
async def webhook_deliveries(
    request: Request,
    endpoint_id: str,
    after: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_PAGE)] = 20,
) -> JSONBytes:
    """The delivery log, newest first; page with `after` = the last `id` seen."""
    admin_of(request)
    page = await runtime_of(request).webhooks.deliveries(endpoint_id, after=after, limit=limit)
    return JSONBytes(
        {
            "object": "list",
            "data": [attempt_object(a) for a in page.attempts],
            "has_more": page.has_more,
        }
    )
