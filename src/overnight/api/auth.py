"""Who is calling. Every request is authenticated before any route runs and
before its body is read: a caller without a valid key cannot make the server
read, store or parse anything. Only a few paths are public (health, metrics,
the API schema, and Together's upload URLs, whose one-time token is their
credential).

The key comes in `Authorization: Bearer` (OpenAI, Together) or `x-api-key`
(Anthropic). An admin key sees every tenant's objects; with
`x-overnight-tenant: NAME` it acts for that tenant instead (and may then
create files and batches for it).
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from overnight.api.errors import error_response, log_server_error
from overnight.api.responses import runtime_of
from overnight.domain.keys import tenant_name_problem
from overnight.errors import AuthenticationFailed, Forbidden, InvalidRequest, OvernightError
from overnight.tenants import Caller
from overnight.types import TenantId, TenantScope

#: Paths served without a key. The dashboard (`/ui`) signs its users in
#: itself, with a session cookie (`ui/sessions.py`).
PUBLIC_PATHS = re.compile(
    r"^/(health|metrics|openapi\.json|docs|docs/oauth2-redirect|redoc)$"
    r"|^/together/v1/files/upload/[^/]+$"
    r"|^/ui(/.*)?$"
)
#: An admin key sends this to act for one tenant.
TENANT_HEADER = "x-overnight-tenant"


def api_key_of(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key") or None


async def authenticate(request: Request) -> Caller:
    caller = await runtime_of(request).tenants.resolve(api_key_of(request))
    if caller is None:
        raise AuthenticationFailed(
            "Missing or unknown API key. Send it as 'Authorization: Bearer <key>' "
            "or 'x-api-key: <key>'.",
            code="invalid_api_key",
        )
    acting_for = request.headers.get(TENANT_HEADER)
    if acting_for is not None and caller.admin and caller.tenant is None:
        problem = tenant_name_problem(acting_for)
        if problem is not None:
            raise InvalidRequest(problem, param=TENANT_HEADER, code="invalid_value")
        return Caller(TenantId(acting_for), admin=True)
    return caller


class Authenticate:
    """ASGI middleware: resolve the caller into `request.state.caller`, or
    answer 401 in the dialect's error shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or PUBLIC_PATHS.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            caller = await authenticate(request)
        except OvernightError as error:
            log_server_error(request, error)
            await error_response(request, error)(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


def caller_of(request: Request) -> Caller:
    caller = getattr(request.state, "caller", None)
    if not isinstance(caller, Caller):  # a public path asked for a caller
        raise AuthenticationFailed("This request carries no API key.", code="invalid_api_key")
    return caller


def scope_of(request: Request) -> TenantScope:
    """Whose objects this caller may read: its tenant's, or every tenant's
    for an admin."""
    return caller_of(request).tenant


def tenant_of(request: Request) -> TenantId:
    """The tenant that new files, uploads and batches will belong to."""
    tenant = caller_of(request).tenant
    if tenant is None:
        raise Forbidden(
            f"An admin key belongs to no tenant; send '{TENANT_HEADER}: NAME' to create "
            "objects for a tenant.",
            param=TENANT_HEADER,
            code="tenant_required",
        )
    return tenant


def admin_of(request: Request) -> Caller:
    caller = caller_of(request)
    if not caller.admin:
        raise Forbidden("This needs an admin key.", code="admin_only")
    return caller
