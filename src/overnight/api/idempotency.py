"""`Idempotency-Key` on the creates: an SDK that retries after a timeout
gets the object its first try made, not a second one.

ASGI middleware, inside authentication (a key is per tenant) and the body
limits. The first request with a key claims it, runs, and, if it succeeds,
its JSON answer is stored before it is sent; a repeat with the same route
and request hash gets that answer again (with `Idempotent-Replayed: true`),
a different request under the key is refused 409 `idempotency_key_reused`,
and a repeat while the first still runs 409 `idempotency_key_in_use`
(retryable: the SDKs try again and then get the answer).

What "the same request" means: the SHA-256 of the body bytes, except for
multipart forms, whose boundary is random per try; those are hashed part
by part (name, filename, bytes) as they stream through, never held.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
from collections.abc import Callable
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from overnight import _json
from overnight.api.errors import error_response, log_server_error
from overnight.api.multipart import MAX_PART_HEADER_BYTES
from overnight.api.responses import runtime_of
from overnight.domain.idempotency import IdempotencyRecord, Verdict, verdict
from overnight.errors import OvernightError
from overnight.idempotency import HEADER, IdempotencyKeys, refusal
from overnight.tenants import Caller

#: The creates that honour the header. Together's file announcement and
#: multipart initiate are left out: their answers carry one-time upload
#: URLs, which are stored only as hashes, so they cannot be replayed (and a
#: second grant creates nothing until bytes are sent to it).
IDEMPOTENT_PATHS = re.compile(
    r"^/v1/(files|uploads|batches)$"
    r"|^/v1/uploads/[^/]+/(parts|complete)$"
    r"|^/together/v1/(batches|files/upload|files/multipart/complete)$"
    r"|^/anthropic/v1/messages/batches$"
)
#: Set on an answer that is a stored one.
REPLAYED_HEADER = "Idempotent-Replayed"
#: Largest answer stored; the creates answer a few KiB.
MAX_STORED_ANSWER = 1024 * 1024

_HEADER_KEY = HEADER.lower().encode("latin-1")

log = logging.getLogger("overnight.api")


class HonourIdempotencyKeys:
    """`body_limit`: the most body bytes hashed for a repeat; a longer body
    could not have succeeded the first time, so it is a different request."""

    def __init__(self, app: ASGIApp, *, body_limit: int) -> None:
        self.app = app
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _key_of(scope)
        caller = scope.get("state", {}).get("caller")
        if key is None or not isinstance(caller, Caller) or caller.tenant is None:
            # No key, or a caller that cannot create (the route says why).
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        route = f"{scope['method']} {scope['path']}"
        keys = IdempotencyKeys(runtime_of(request).service.store)
        digest = RequestDigest(request.headers.get("content-type", ""))
        try:
            record, ours = await keys.claim(caller.tenant, key, route)
        except OvernightError as error:
            log_server_error(request, error)
            await error_response(request, error)(scope, receive, send)
            return
        if ours:
            await _Attempt(self.app, keys, record, digest).run(scope, receive, send)
            return
        request_hash = await _hash_body(receive, digest, self.body_limit)
        found = verdict(record, route, request_hash)
        if found is Verdict.REPLAY:
            assert record.status_code is not None and record.body is not None
            replay = Response(
                record.body,
                status_code=record.status_code,
                media_type="application/json",
                headers={REPLAYED_HEADER: "true"},
            )
            await replay(scope, receive, send)
            return
        await error_response(request, refusal(found))(scope, receive, send)


def _key_of(scope: Scope) -> str | None:
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    if not IDEMPOTENT_PATHS.match(scope["path"]):
        return None
    for name, value in scope["headers"]:
        if name == _HEADER_KEY:
            return bytes(value).decode("latin-1")
    return None


class _Attempt:
    """The first request under a key: run it, hashing its body on the way
    in; hold its answer until the end, store it if it succeeded (or let
    the key go if not), then send it."""

    def __init__(
        self, app: ASGIApp, keys: IdempotencyKeys, claim: IdempotencyRecord, digest: RequestDigest
    ) -> None:
        self.app = app
        self.keys = keys
        self.claim = claim
        self.digest = digest
        self.start: Message | None = None
        self.body = bytearray()
        self.settled = False

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def hashing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.digest.feed(message.get("body", b""), more=message.get("more_body", False))
            return message

        async def holding_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.start = message
                return
            if message["type"] != "http.response.body" or self.settled:
                await send(message)
                return
            self.body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if more and len(self.body) <= MAX_STORED_ANSWER:
                return
            await self._settle(complete=not more)
            assert self.start is not None
            await send(self.start)
            await send({**message, "body": bytes(self.body)})

        try:
            await self.app(scope, hashing_receive, holding_send)
        finally:
            if not self.settled:
                self.settled = True
                await self.keys.release(self.claim)

    async def _settle(self, *, complete: bool) -> None:
        """Store the answer if it is a whole success to a whole request;
        otherwise free the key, so that a retry runs again."""
        self.settled = True
        status = self.start["status"] if self.start is not None else 500
        request_hash = self.digest.hexdigest()
        try:
            if complete and 200 <= status < 300 and request_hash is not None:
                await self.keys.answer(
                    self.claim,
                    request_hash=request_hash,
                    status_code=status,
                    body=bytes(self.body),
                    object_id=_object_id(bytes(self.body)),
                )
            else:
                await self.keys.release(self.claim)
        except Exception:
            # The object exists (or the request failed) either way: answer
            # the caller. The claim stays, unanswered, so a repeat is told
            # to wait until it is given up, rather than made twice.
            log.exception("could not settle idempotency key %r", self.claim.key)


async def _hash_body(receive: Receive, digest: RequestDigest, limit: int) -> str | None:
    """Read a repeat's body only to hash it; None past `limit` bytes or if
    the client goes away."""
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            return None
        more = message.get("more_body", False)
        digest.feed(chunk, more=more)
        if not more:
            return digest.hexdigest()


def _object_id(body: bytes) -> str | None:
    """The id of the object an answer describes: its own `id`, or that of
    the one object it wraps (Together's `{"job": ...}`, `{"file": ...}`)."""
    try:
        answer = _json.loads(body)
    except _json.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    if isinstance(answer.get("id"), str):
        return str(answer["id"])[:64]
    for wrapped in ("job", "file"):
        inner = answer.get(wrapped)
        if isinstance(inner, dict) and isinstance(inner.get("id"), str):
            return str(inner["id"])[:64]
    return None


class RequestDigest:
    """SHA-256 of what a request says, fed chunk by chunk as it arrives.

    A multipart form is hashed by meaning, not bytes: each part's name,
    filename and the SHA-256 of its bytes, in order, so that a retry with
    a new boundary is the same request."""

    def __init__(self, content_type: str) -> None:
        self._outer = hashlib.sha256()
        self._complete = False
        self._broken = False
        self._parser: MultipartParser | None = None
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind == b"multipart/form-data" and boundary:
            self._parser = _hashing_parser(boundary, self._outer, self._form_ended)
        self._ended = self._parser is None

    def feed(self, chunk: bytes, *, more: bool) -> None:
        if self._parser is None:
            self._outer.update(chunk)
        elif chunk and not self._broken:
            try:
                self._parser.write(chunk)
            except MultipartParseError:
                self._broken = True
        if not more:
            self._complete = True

    def _form_ended(self) -> None:
        self._ended = True

    def hexdigest(self) -> str | None:
        """None until the whole body was fed, or if it is not a whole, valid
        form (a form cut short must not pass for one with fewer parts)."""
        if not (self._complete and self._ended) or self._broken:
            return None
        return self._outer.hexdigest()


def _bound(header: bytearray) -> None:
    """A part's headers are held until they end: a form whose headers are
    longer than the upload routes accept is not a valid form."""
    if len(header) > MAX_PART_HEADER_BYTES:
        raise MultipartParseError("a part header is too long")


def _hashing_parser(boundary: bytes, outer: Any, on_end: Callable[[], None]) -> MultipartParser:
    header_name = bytearray()
    header_value = bytearray()
    disposition = bytearray()
    data = hashlib.sha256()
    size = 0

    def framed(value: bytes) -> None:
        outer.update(struct.pack(">Q", len(value)))
        outer.update(value)

    def on_part_begin() -> None:
        nonlocal data, size
        disposition.clear()
        data = hashlib.sha256()
        size = 0

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        header_name.extend(chunk[start:end])
        _bound(header_name)

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        header_value.extend(chunk[start:end])
        _bound(header_value)

    def on_header_end() -> None:
        if bytes(header_name).lower() == b"content-disposition":
            disposition[:] = header_value
        header_name.clear()
        header_value.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        nonlocal size
        data.update(chunk[start:end])
        size += end - start

    def on_part_end() -> None:
        _, options = parse_options_header(bytes(disposition))
        framed(options.get(b"name", b""))
        filename = options.get(b"filename")
        framed(b"\x00" if filename is None else b"\x01" + filename)
        framed(data.digest())
        outer.update(struct.pack(">Q", size))

    return MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
