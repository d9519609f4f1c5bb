"""Who is calling: API key -> tenant.

Single-user local mode (no tenants configured) maps every caller to the
tenant `default`; the server then binds to loopback only.
"""

from __future__ import annotations

from starlette.requests import Request

from overnight.types import TenantId

LOCAL_TENANT = TenantId("default")


def tenant_of(request: Request) -> TenantId:
    return LOCAL_TENANT
