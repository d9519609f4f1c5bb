"""The dashboard's routes: one function a page, each reading through the
same service layer as the API (`Service`, `Admin`) or, for what only the
dashboard shows, the store's `DashboardStore` operations. No SQL here.

Every page renders whole for a visit and, asked with `x-overnight-live: 1`,
only its live block, which `static/ui.js` fetches every few seconds to
refresh the page in place. Errors render as pages with the API's status
codes, and another tenant's objects are the same 404 as missing ones.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from overnight import __version__, metrics
from overnight.api.responses import file_download, runtime_of
from overnight.domain.dialects import DIALECTS
from overnight.domain.error_groups import ErrorGroup, group_errors
from overnight.domain.files import FilePurpose
from overnight.domain.keys import key_digest
from overnight.domain.quotas import QuotaOverrides
from overnight.domain.status import BatchStatus
from overnight.errors import InvalidRequest, NotFound, OvernightError
from overnight.types import TenantId, TenantScope
from overnight.ui import charts, views
from overnight.ui.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Viewer,
    clear_cookie,
    current_viewer,
    end_session,
    same_token,
    set_cookie,
    start_session,
)

PAGE_SIZE = 50
#: Error-file lines read to group a batch's failures (the first ones).
MAX_ERROR_LINES = 10_000
LIVE_HEADER = "x-overnight-live"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}

Handler = Callable[[Request, Viewer], Awaitable[Response]]


@lru_cache(maxsize=1)
def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("overnight.ui", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        bar=charts.progress_bar,
        duration=views.duration,
        size=views.size,
        version=__version__,
        statuses=[s.value for s in BatchStatus],
        dialects=sorted(DIALECTS),
        purposes=[p.value for p in FilePurpose],
    )
    env.filters["when"] = _when
    env.filters["num"] = lambda n: f"{n:,}"
    return env


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def render(
    request: Request, viewer: Viewer | None, name: str, status: int = 200, **context: Any
) -> HTMLResponse:
    """The page, or only its live block when the page script asks."""
    template = templates().get_template(name)
    context = {"viewer": viewer, "path": request.url.path, "now": time.time(), **context}
    if request.headers.get(LIVE_HEADER) == "1" and "live" in template.blocks:
        body = "".join(template.blocks["live"](template.new_context(context)))
    else:
        body = template.render(context)
    return HTMLResponse(body, status_code=status)


def page(
    handler: Handler, *, admin_only: bool = False, form: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a page: find the viewer (or send them to sign in), refuse a
    form without its CSRF token, hide admin pages from tenants (404, as
    the API hides what a caller may not see), and render errors as pages."""

    async def endpoint(request: Request) -> Response:
        started, started_cpu = time.perf_counter(), time.process_time()
        viewer, new_token = await current_viewer(request)
        if viewer is None:
            if form or request.headers.get(LIVE_HEADER) == "1":
                response: Response = error_page(request, None, 401, "Sign in again.")
            else:
                target = f"/ui/login?{urlencode({'next': request.url.path})}"
                response = RedirectResponse(target, status_code=303)
        elif admin_only and not viewer.admin:
            response = error_page(request, viewer, 404, "No such page.")
        elif form and not same_token((await request.form()).get("csrf"), viewer.csrf):
            response = error_page(
                request, viewer, 403, "This form has expired or did not come from this page."
            )
        else:
            try:
                response = await handler(request, viewer)
            except OvernightError as error:
                response = error_page(request, viewer, error.status_code, error.message)
        if new_token is not None:
            set_cookie(request, response, SESSION_COOKIE, new_token, SESSION_SECONDS)
        response.headers.update(SECURITY_HEADERS)
        # The page's own time on the server, and the process's CPU time
        # meanwhile, which a busy machine's other processes do not inflate
        # (browsers show both; the benchmark reads them).
        elapsed_ms = 1000 * (time.perf_counter() - started)
        cpu_ms = 1000 * (time.process_time() - started_cpu)
        response.headers["server-timing"] = f"app;dur={elapsed_ms:.2f}, cpu;dur={cpu_ms:.2f}"
        return response

    return endpoint


def error_page(request: Request, viewer: Viewer | None, status: int, message: str) -> HTMLResponse:
    response = render(request, viewer, "error.html", status, status_code=status, message=message)
    response.headers.update(SECURITY_HEADERS)
    return response


def scope_of(viewer: Viewer, request: Request | None = None) -> TenantScope:
    """Whose objects the viewer sees: their tenant's, or for an admin every
    tenant's, or the one tenant the admin filters on."""
    if viewer.admin and viewer.tenant is None and request is not None:
        tenant = request.query_params.get("tenant")
        if tenant:
            return TenantId(tenant)
    return viewer.tenant


def _page_size(request: Request) -> int:
    """`?limit=` rows a page (1 to 100), else PAGE_SIZE."""
    value = request.query_params.get("limit", "")
    return min(100, max(1, int(value))) if value.isdigit() else PAGE_SIZE


def _query(request: Request, **changes: str | None) -> str:
    params = {k: v for k, v in request.query_params.items() if v}
    for key in ("after", "before"):
        params.pop(key, None)
    params.update({k: v for k, v in changes.items() if v})
    return f"?{urlencode(params)}" if params else "?"


# ------------------------------------------------------------------ sign-in


async def login_form(request: Request) -> Response:
    viewer, _ = await current_viewer(request)
    if viewer is not None:
        return RedirectResponse("/ui/batches", status_code=303)
    return _login_page(request)


def _login_page(request: Request, problem: str | None = None) -> Response:
    import secrets

    token = secrets.token_urlsafe(24)
    response = render(
        request,
        None,
        "login.html",
        401 if problem else 200,
        csrf=token,
        problem=problem,
        next=_safe_next(request.query_params.get("next")),
    )
    set_cookie(request, response, LOGIN_COOKIE, token, 3600)
    response.headers.update(SECURITY_HEADERS)
    return response


async def login(request: Request) -> Response:
    form = await request.form()
    if not same_token(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
        return error_page(request, None, 403, "The sign-in form expired; open it again.")
    sent = form.get("api_key")
    key = sent if isinstance(sent, str) else ""
    caller = await runtime_of(request).tenants.resolve(key)
    if caller is None or not key:
        return _login_page(request, "That API key is not valid.")
    token, _ = await start_session(request, caller, key_digest(key))
    target = _safe_next(form.get("next"))
    response = RedirectResponse(target, status_code=303)
    set_cookie(request, response, SESSION_COOKIE, token, SESSION_SECONDS)
    clear_cookie(request, response, LOGIN_COOKIE)
    return response


def _safe_next(value: object) -> str:
    """Only a dashboard path: never a redirect to another site."""
    if isinstance(value, str) and value.startswith("/ui/") and "//" not in value:
        return value
    return "/ui/batches"


async def logout(request: Request, viewer: Viewer) -> Response:
    await end_session(request, viewer)
    response = RedirectResponse("/ui/login", status_code=303)
    clear_cookie(request, response, SESSION_COOKIE)
    return response


# ------------------------------------------------------------------ batches


async def batches_page(request: Request, viewer: Viewer) -> Response:
    runtime = runtime_of(request)
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in {s.value for s in BatchStatus}:
        raise InvalidRequest(f"Unknown status {status!r}.", param="status")
    after, before = params.get("after") or None, params.get("before") or None
    page_ = await runtime.service.list_batches(
        scope_of(viewer, request),
        after=after,
        before=before,
        limit=_page_size(request),
        status=status,
        model=params.get("model") or None,
        dialect=params.get("dialect") or None,
    )
    now = time.time()
    rows = [(batch, views.pace_of(batch, now)) for batch in page_.items]
    newer = older = None
    if page_.items:
        first, last = page_.items[0].id, page_.items[-1].id
        if after is not None or (before is not None and page_.has_more):
            newer = _query(request, before=first)
        if before is not None or page_.has_more:
            older = _query(request, after=last)
    return render(
        request,
        viewer,
        "batches.html",
        rows=rows,
        filters=params,
        models=sorted(runtime.models.names),
        newer=newer,
        older=older,
        live_ms=2000,
    )


async def batch_page(request: Request, viewer: Viewer) -> Response:
    runtime = runtime_of(request)
    scope = scope_of(viewer)
    batch = await runtime.service.get_batch(scope, request.path_params["batch_id"])
    snapshots = await runtime.store.batch_snapshots(batch.id)
    groups: list[ErrorGroup] = []
    error_lines_read = 0
    if batch.errors or batch.error_file_id:
        lines = []
        if batch.error_file_id is not None:
            try:
                lines = [line async for line in _first_lines(request, scope, batch.error_file_id)]
            except NotFound:  # deleted or expired: group what the batch still holds
                lines = []
        error_lines_read = len(lines)
        validation = {
            "errors": {
                "data": [
                    {"code": e.code, "message": e.message, "line": e.line} for e in batch.errors
                ]
            }
        }
        groups = group_errors(validation, lines)
    pace = views.pace_of(batch, time.time())
    return render(
        request,
        viewer,
        "batch.html",
        batch=batch,
        pace=pace,
        timeline=views.timeline(batch),
        chart=charts.throughput_chart(snapshots),
        groups=groups,
        error_lines_read=error_lines_read,
        max_error_lines=MAX_ERROR_LINES,
        cancellable=batch.status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS),
        live_ms=1000 if batch.status in views.LIVE else None,
    )


async def _first_lines(request: Request, scope: TenantScope, file_id: str) -> AsyncIterator[bytes]:
    """The first MAX_ERROR_LINES lines of a file the viewer may read."""
    _, stream = await runtime_of(request).service.file_content(scope, file_id)
    count, rest = 0, b""
    async for piece in stream:
        *lines, rest = (rest + piece).split(b"\n")
        for line in lines:
            if line.strip():
                yield line
                count += 1
                if count >= MAX_ERROR_LINES:
                    return
    if rest.strip():
        yield rest


async def cancel_batch(request: Request, viewer: Viewer) -> Response:
    batch_id = request.path_params["batch_id"]
    await runtime_of(request).service.cancel_batch(scope_of(viewer), batch_id)
    return RedirectResponse(f"/ui/batches/{batch_id}", status_code=303)


# -------------------------------------------------------------------- files


async def files_page(request: Request, viewer: Viewer) -> Response:
    params = request.query_params
    page_ = await runtime_of(request).service.list_files(
        scope_of(viewer, request),
        purpose=params.get("purpose") or None,
        after=params.get("after") or None,
        limit=_page_size(request),
    )
    older = _query(request, after=page_.items[-1].id) if page_.has_more and page_.items else None
    return render(request, viewer, "files.html", files=page_.items, filters=params, older=older)


async def file_content(request: Request, viewer: Viewer) -> Response:
    record, stream = await runtime_of(request).service.file_content(
        scope_of(viewer), request.path_params["file_id"]
    )
    response: StreamingResponse = file_download(record, stream)
    return response


async def delete_file(request: Request, viewer: Viewer) -> Response:
    await runtime_of(request).service.delete_file(scope_of(viewer), request.path_params["file_id"])
    return RedirectResponse("/ui/files", status_code=303)


# ------------------------------------------------------------------- models


async def models_page(request: Request, viewer: Viewer) -> Response:
    runtime = runtime_of(request)
    queued = await runtime.store.queued_by_model(scope_of(viewer))
    # With worker processes the requests run there: their published figures.
    in_workers = metrics.worker_figures() if runtime.supervisor is not None else {}
    now = time.monotonic()
    models = []
    for served in sorted(runtime.models.all(), key=lambda m: m.settings.name):
        replicas = getattr(served.backend, "replicas", None)
        figures = in_workers.get(served.settings.name)
        models.append(
            {
                "name": served.settings.name,
                "limit": served.limiter.limit,
                "max": served.settings.max_concurrency,
                "in_flight": served.limiter.in_flight,
                "waiting": served.limiter.waiting,
                "latency": served.recent_latency,
                "error_rate": served.recent_error_rate,
                **(
                    {}
                    if figures is None
                    else {
                        "limit": int(figures.get("limit", 0)),
                        "in_flight": int(figures.get("in_flight", 0)),
                        "waiting": None,
                        "latency": figures.get("latency", 0.0),
                        "error_rate": figures.get("error_rate", 0.0),
                    }
                ),
                "queued": queued.get(served.settings.name, 0),
                "replicas": [
                    {
                        "url": r.url,
                        "outstanding": r.outstanding,
                        "ejected": r.ejected_until > now,
                        "back_in": max(0.0, r.ejected_until - now),
                        "failures": r.failures_in_a_row,
                    }
                    for r in (replicas.replicas if replicas is not None and figures is None else [])
                ],
            }
        )
    return render(
        request,
        viewer,
        "models.html",
        models=models,
        per_line=queued.get(None, 0),
        in_workers=bool(in_workers),
        live_ms=2000,
    )


# ------------------------------------------------------------ admin pages


async def workers_page(request: Request, viewer: Viewer) -> Response:
    runtime = runtime_of(request)
    workers = await runtime.store.worker_views(time.time(), runtime.settings.lease_ttl)
    return render(request, viewer, "workers.html", workers=workers, live_ms=2000)


async def tenants_page(request: Request, viewer: Viewer) -> Response:
    tenants = await runtime_of(request).admin.tenants()
    return render(request, viewer, "tenants.html", tenants=tenants)


async def set_quotas(request: Request, viewer: Viewer) -> Response:
    form = await request.form()

    def number(name: str) -> int | None:
        value = form.get(name)
        if not isinstance(value, str) or not value.strip():
            return None
        if not value.strip().isdigit() or int(value) < 1:
            raise InvalidRequest(f"{name} must be a whole number of at least 1, or blank.")
        return int(value)

    overrides = QuotaOverrides(
        max_pending_batches=number("max_pending_batches"),
        max_enqueued_requests=number("max_enqueued_requests"),
    )
    await runtime_of(request).admin.set_quotas(request.path_params["name"], overrides)
    return RedirectResponse("/ui/tenants", status_code=303)


async def home(request: Request) -> Response:
    return RedirectResponse("/ui/batches", status_code=303)


def dashboard_routes() -> list[BaseRoute]:
    return [
        Route("/", home),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", page(logout, form=True), methods=["POST"]),
        Route("/batches", page(batches_page)),
        Route("/batches/{batch_id}", page(batch_page)),
        Route("/batches/{batch_id}/cancel", page(cancel_batch, form=True), methods=["POST"]),
        Route("/files", page(files_page)),
        Route("/files/{file_id}/content", page(file_content)),
        Route("/files/{file_id}/delete", page(delete_file, form=True), methods=["POST"]),
        Route("/models", page(models_page)),
        Route("/workers", page(workers_page, admin_only=True)),
        Route("/tenants", page(tenants_page, admin_only=True)),
        Route(
            "/tenants/{name}/quotas", page(set_quotas, admin_only=True, form=True), methods=["POST"]
        ),
        Mount("/static", app=StaticFiles(packages=[("overnight.ui", "static")]), name="static"),
    ]
