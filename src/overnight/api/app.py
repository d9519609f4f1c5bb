"""The ASGI app: every dialect's routes, the admin API, the dashboard
(`/ui/`, unless `ui = false`), error rendering, request ids, timing,
authentication and body limits, and a lifespan that opens the runtime
(store, blobs, models, worker)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from overnight import __version__
from overnight.api import (
    admin,
    anthropic,
    catalog,
    errors,
    openai,
    operations,
    together,
    webhooks,
    whoami,
)
from overnight.api.auth import Authenticate
from overnight.api.idempotency import HonourIdempotencyKeys
from overnight.api.limits import LimitBodies
from overnight.api.multipart import MAX_FIELD_BYTES, MAX_FIELDS, MAX_PART_HEADER_BYTES
from overnight.api.openapi import install_schema
from overnight.api.ratelimit import LimitRate
from overnight.api.responses import JSONBytes
from overnight.api.timing import TimeRequests
from overnight.errors import OvernightError
from overnight.runtime import Runtime
from overnight.settings import Settings

#: The most bytes a multipart upload adds around its file: its other fields
#: and every part's headers.
FORM_OVERHEAD = MAX_FIELDS * (MAX_FIELD_BYTES + MAX_PART_HEADER_BYTES)


#: Every dialect's routes, included once a process. FastAPI builds an
#: included router's routes (their parameter and response models) on the
#: first request that reaches them, once per include: included into each
#: app, that was 0.13 CPU-s an app, paid by every in-process test. Included
#: here, each app takes these already built routes (`routes.extend`).
ROUTES = APIRouter(default_response_class=JSONBytes)
ROUTES.include_router(openai.router, prefix="/v1")
ROUTES.include_router(catalog.openai_router, prefix="/v1")
ROUTES.include_router(together.router, prefix="/together/v1")
ROUTES.include_router(catalog.together_router, prefix="/together/v1")
ROUTES.include_router(whoami.router, prefix="/together")
ROUTES.include_router(anthropic.router, prefix="/anthropic/v1")
ROUTES.include_router(admin.router, prefix="/admin")
ROUTES.include_router(webhooks.router, prefix="/admin")
ROUTES.include_router(operations.router)


class RequestIdMiddleware:
    """Every response carries `x-request-id`, errors included (and, under
    /anthropic, the same id as `request-id`, where Anthropic's SDK reads
    it), and `x-content-type-options: nosniff`, so that a browser treats a
    download (a file whose bytes a tenant chose) as the type it is served
    as and never sniffs it into HTML."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{secrets.token_hex(12)}".encode()
        added = [(b"x-request-id", request_id), (b"x-content-type-options", b"nosniff")]
        if scope["path"].startswith("/anthropic/"):
            added.append((b"request-id", request_id))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    own_runtime = runtime or Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await own_runtime.start()
        app.state.runtime = own_runtime
        try:
            yield
        finally:
            await own_runtime.stop()

    app = FastAPI(
        title="overnight",
        version=__version__,
        description="A self-hosted Batch API for LLM inference.",
        lifespan=lifespan,
        default_response_class=JSONBytes,
    )
    app.router.routes.extend(ROUTES.routes)
    install_schema(app)
    if settings.ui:
        from overnight.ui import mount_dashboard

        mount_dashboard(app)

    app.add_exception_handler(OvernightError, errors.handle_overnight_error)
    app.add_exception_handler(RequestValidationError, errors.handle_validation_error)
    app.add_exception_handler(HTTPException, errors.handle_http_error)
    app.add_exception_handler(ClientDisconnect, errors.handle_client_gone)
    app.add_exception_handler(Exception, errors.handle_unexpected)
    # Outermost last: request ids on every answer, then who is calling, then
    # how often they may call, then how large a body may be, then whether a
    # create already ran.
    app.add_middleware(
        HonourIdempotencyKeys,
        body_limit=max(settings.max_body_bytes, settings.max_upload_bytes + FORM_OVERHEAD),
    )
    app.add_middleware(LimitBodies, limit=settings.max_body_bytes)
    app.add_middleware(
        LimitRate, per_second=settings.rate_limit_per_second, burst=settings.rate_limit_burst
    )
    app.add_middleware(Authenticate)
    app.add_middleware(TimeRequests)
    app.add_middleware(RequestIdMiddleware)
    return app
