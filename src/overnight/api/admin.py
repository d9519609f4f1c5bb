"""The admin API under `/admin`, for admin keys only: every tenant at a
glance (quotas in force, what it has pending), and setting its quotas.

Like the dialects it only translates: parse, call `Admin`, render.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from overnight.admin import TenantOverview
from overnight.api import schemas
from overnight.api.auth import admin_of
from overnight.api.responses import JSONBytes, ok, runtime_of
from overnight.domain.quotas import QuotaOverrides

router = APIRouter(
    tags=["admin"], default_response_class=JSONBytes, responses=schemas.error_responses()
)


def tenant_object(overview: TenantOverview) -> dict[str, Any]:
    return {
        "object": "tenant",
        "name": overview.name,
        "quotas": {
            "max_pending_batches": overview.quotas.max_pending_batches,
            "max_enqueued_requests": overview.quotas.max_enqueued_requests,
        },
        "overrides": {
            "max_pending_batches": overview.overrides.max_pending_batches,
            "max_enqueued_requests": overview.overrides.max_enqueued_requests,
        },
        "usage": {
            "pending_batches": overview.usage.pending_batches,
            "enqueued_requests": overview.usage.enqueued_requests,
        },
        "active_keys": overview.active_keys,
    }


class QuotasBody(BaseModel):
    """A quota left out or null returns to the default from the settings."""

    model_config = ConfigDict(extra="forbid")

    max_pending_batches: StrictInt | None = Field(None, ge=0, le=2**62)
    max_enqueued_requests: StrictInt | None = Field(None, ge=0, le=2**62)


@router.get("/tenants", responses=ok(schemas.TenantList))
async def list_tenants(request: Request) -> JSONBytes:
    admin_of(request)
    overviews = await runtime_of(request).admin.tenants()
    return JSONBytes({"object": "list", "data": [tenant_object(o) for o in overviews]})


@router.get("/tenants/{name}", responses=ok(schemas.TenantObject))
async def get_tenant(request: Request, name: str) -> JSONBytes:
    admin_of(request)
    return JSONBytes(tenant_object(await runtime_of(request).admin.tenant(name)))


@router.put("/tenants/{name}/quotas", responses=ok(schemas.TenantObject))
async def set_quotas(request: Request, name: str, body: QuotasBody) -> JSONBytes:
    admin_of(request)
    overrides = QuotaOverrides(body.max_pending_batches, body.max_enqueued_requests)
    return JSONBytes(tenant_object(await runtime_of(request).admin.set_quotas(name, overrides)))
