"""Who is looking at the dashboard, and whether a form really came from it.

Single-user local mode needs no sign-in: the first visit gets a session of
its own (the local user's, with an admin's view), so that forms still carry
a CSRF token. With tenants, a person signs in with an API key: the key is
resolved as the API would (`Tenants.resolve`) and never stored; the session
is a random token in an HttpOnly, SameSite=Strict cookie (Secure over
https), of which the database keeps only the SHA-256 (`ui_sessions`), with
the key's SHA-256, resolved again on every page: a revoked key's sessions
end with it.
Every POST form carries the session's CSRF token, checked before anything
runs. A session made in local mode ends when the server leaves it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from overnight.api.responses import runtime_of
from overnight.domain.dashboard import UiSession
from overnight.tenants import LOCAL_TENANT, Caller
from overnight.types import TenantId

SESSION_COOKIE = "overnight_session"
#: The sign-in form's own CSRF token, before there is a session.
LOGIN_COOKIE = "overnight_login"
SESSION_SECONDS = 12 * 3600
COOKIE_PATH = "/ui"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whom a page is for. `tenant` None is an admin seeing every tenant."""

    tenant: TenantId | None
    admin: bool
    csrf: str
    #: False in local mode: there is nobody to sign out.
    signed_in: bool
    token_hash: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _is_local(session: UiSession) -> bool:
    """Local-mode sessions are the only ones with both a tenant and admin rights."""
    return session.admin and session.tenant is not None


async def current_viewer(request: Request) -> tuple[Viewer | None, str | None]:
    """The viewer, and a new session token to set as the cookie (local
    mode's first visit), or (None, None) when someone must sign in."""
    runtime = runtime_of(request)
    tenants = runtime.tenants
    now = int(time.time())
    token = request.cookies.get(SESSION_COOKIE)
    session = await runtime.store.find_ui_session(digest(token), now) if token else None
    if tenants.local_mode:
        await tenants.load()
    if tenants.local_mode:
        if session is not None and _is_local(session):
            return _viewer(session, signed_in=False), None
        token, session = await start_session(request, Caller(LOCAL_TENANT, admin=True))
        return _viewer(session, signed_in=False), token
    if session is None or _is_local(session) or session.key_digest is None:
        return None, None
    caller = await tenants.resolve_digest(session.key_digest)
    if caller != Caller(session.tenant, admin=session.admin):  # revoked since
        await runtime.store.delete_ui_session(session.token_hash)
        return None, None
    return _viewer(session, signed_in=True), None


async def start_session(
    request: Request, caller: Caller, key_digest: str | None = None
) -> tuple[str, UiSession]:
    """A new session for `caller` (signed in with the key of `key_digest`):
    its cookie token and its record."""
    token = secrets.token_urlsafe(32)
    now = int(time.time())
    session = UiSession(
        token_hash=digest(token),
        tenant=caller.tenant,
        admin=caller.admin,
        csrf=secrets.token_urlsafe(24),
        created_at=now,
        expires_at=now + SESSION_SECONDS,
        key_digest=key_digest,
    )
    await runtime_of(request).store.insert_ui_session(session)
    return token, session


async def end_session(request: Request, viewer: Viewer) -> None:
    await runtime_of(request).store.delete_ui_session(viewer.token_hash)


def _viewer(session: UiSession, *, signed_in: bool) -> Viewer:
    return Viewer(session.tenant, session.admin, session.csrf, signed_in, session.token_hash)


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def same_token(sent: object, expected: str | None) -> bool:
    """A CSRF check in constant time."""
    return (
        isinstance(sent, str)
        and bool(expected)
        and secrets.compare_digest(sent.encode(), (expected or "").encode())
    )
