"""Who is calling: the API key in `Authorization: Bearer` (OpenAI, Together)
or `x-api-key` (Anthropic), resolved to a tenant."""

from __future__ import annotations

from starlette.requests import Request

from overnight.api.responses import runtime_of
from overnight.errors import AuthenticationFailed
from overnight.types import TenantId


def api_key_of(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key") or None


def tenant_of(request: Request) -> TenantId:
    tenant = runtime_of(request).tenants.resolve(api_key_of(request))
    if tenant is None:
        raise AuthenticationFailed(
            "Missing or unknown API key. Send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )
    return tenant
