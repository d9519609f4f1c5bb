"""The Anthropic dialect, served under `/anthropic/v1`: Message Batches as
the `anthropic` SDK sends and expects them (see docs/api-anthropic.md),
with `Anthropic(base_url="http://HOST:PORT/anthropic")`.

Only translation happens here: parse the wire, call `MessageBatches` (over
`service`), render. The create body, up to 256 MB, is parsed as a stream
(ijson's C parser) and never held whole: each request is handed on as it
is parsed, checked, and written to storage.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.responses import StreamingResponse

from overnight.api import schemas
from overnight.api.auth import scope_of, tenant_of
from overnight.api.responses import JSONBytes, ok, runtime_of
from overnight.domain.batch import Batch
from overnight.domain.dialects import ANTHROPIC
from overnight.domain.message_requests import CUSTOM_ID_PATTERN
from overnight.domain.status import StopReason
from overnight.errors import InvalidRequest, PayloadTooLarge
from overnight.message_batches import MessageBatches
from overnight.retries import Retries
from overnight.service import Page

router = APIRouter(
    tags=["anthropic"],
    default_response_class=JSONBytes,
    responses=schemas.anthropic_error_responses(),
)

#: Most batches one page lists.
MAX_PAGE = 1000


@functools.cache
def _json_stream() -> Any:
    """ijson's C parser where it was built (it is in the wheels), else its
    pure-Python one: the same answers, slower. Imported on the first Message
    Batch create, not with the app: ijson's import is about 0.06 s of every
    API process's start (it pulls in `decimal`)."""
    import ijson  # type: ignore[import-untyped]

    try:
        return ijson.get_backend("yajl2_c")
    except ImportError:  # pragma: no cover
        return ijson


# ------------------------------------------------------------------ rendering


def rfc3339(timestamp: int | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def request_counts(batch: Batch, requests: int) -> dict[str, int]:
    """Anthropic's five counts from the core's: `failed` splits into the
    lines that ran and erred and the `stopped` ones (canceled or expired,
    as the batch's stop says). Once the batch ended, lines with no result
    (a batch cancelled before it ran) count as stopped too."""
    counts = batch.request_counts
    stopped, errored = counts.stopped, counts.failed - counts.stopped
    processing = max(0, requests - counts.done)
    if batch.status.is_terminal:
        if batch.stop_reason is None:
            errored += processing
        else:
            stopped += processing
        processing = 0
    expired = batch.stop_reason is StopReason.EXPIRED
    return {
        "processing": processing,
        "succeeded": counts.completed,
        "errored": errored,
        "canceled": 0 if expired else stopped,
        "expired": stopped if expired else 0,
    }


def message_batch(batch: Batch, requests: int, request: Request) -> dict[str, Any]:
    return {
        "id": ANTHROPIC.show_batch_id(batch.id),
        "type": "message_batch",
        "processing_status": ANTHROPIC.status_of(batch),
        "request_counts": request_counts(batch, requests),
        "created_at": rfc3339(batch.created_at),
        "ended_at": rfc3339(batch.ended_at),
        "expires_at": rfc3339(batch.expires_at),
        "archived_at": None,
        "cancel_initiated_at": rfc3339(batch.cancelling_at),
        "results_url": _results_url(request, batch) if batch.status.is_terminal else None,
    }


def _results_url(request: Request, batch: Batch) -> str:
    """Absolute, on this server: under `public_url` when the operator set
    it (behind a proxy), else built from the request."""
    base = runtime_of(request).settings.public_url or request.base_url
    path = request.app.url_path_for(
        "anthropic_batch_results", batch_id=ANTHROPIC.show_batch_id(batch.id)
    )
    return str(path.make_absolute_url(base))


def message_batches(request: Request) -> MessageBatches:
    return MessageBatches(runtime_of(request).service)


async def _shown(request: Request, batch: Batch) -> JSONBytes:
    requests = await message_batches(request).requests_in(batch)
    return JSONBytes(message_batch(batch, requests, request))


# --------------------------------------------------------------- the stream


class _Body:
    """The request body as ijson reads it (`await read(n)`), refused with
    413 as soon as it passes `limit` bytes."""

    def __init__(self, request: Request, limit: int) -> None:
        self._chunks = request.stream().__aiter__()
        self.limit = limit
        self.size = 0

    async def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson asks for nothing first, to learn bytes from str
            return b""
        async for chunk in self._chunks:
            if not chunk:
                continue
            self.size += len(chunk)
            if self.size > self.limit:
                raise _too_large(self.limit)
            return chunk
        return b""


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than the limit of {limit} bytes.",
        code="request_too_large",
    )


async def _requests(request: Request, limit: int) -> AsyncIterator[Any]:
    """Each element of the body's `requests` array, as it is parsed;
    a body that is not JSON (or is cut short) is a 400 naming how far
    it got."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    from ijson import JSONError  # imported with `_json_stream`

    body = _Body(request, limit)
    parsed = 0
    try:
        async for item in _json_stream().items_async(body, "requests.item"):
            parsed += 1
            yield item
    except JSONError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON (after {parsed} requests, "
            f"{body.size} bytes): {_first_line(exc)}",
            code="invalid_json",
        ) from None


def _first_line(error: Exception) -> str:
    """yajl's message without the lines under it that draw an arrow at the
    place (spaces and `(right here) ------^`), which JSON turns into noise."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "requests": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "properties": {
                                    "custom_id": {"type": "string", "pattern": CUSTOM_ID_PATTERN},
                                    "params": {"type": "object"},
                                },
                                "required": ["custom_id", "params"],
                            },
                        }
                    },
                    "required": ["requests"],
                }
            }
        },
    }
}


# -------------------------------------------------------------------- routes


@router.post("/messages/batches", responses=ok(schemas.MessageBatch), openapi_extra=_CREATE_BODY)
async def create_batch(request: Request) -> JSONBytes:
    limit = runtime_of(request).settings.max_message_batch_bytes
    batches = message_batches(request)
    batch = await batches.create(tenant_of(request), _requests(request, limit))
    return await _shown(request, batch)


@router.get("/messages/batches", responses=ok(schemas.MessageBatchList))
async def list_batches(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    before_id: str | None = None,
    after_id: str | None = None,
) -> JSONBytes:
    """Newest first. `after_id` pages towards older batches, `before_id`
    towards newer ones."""
    page: Page[Batch] = await runtime_of(request).service.list_batches(
        scope_of(request), after=after_id, before=before_id, limit=limit, max_limit=MAX_PAGE
    )
    batches = message_batches(request)
    data = [message_batch(batch, await batches.requests_in(batch), request) for batch in page.items]
    return JSONBytes(
        {
            "data": data,
            "has_more": page.has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


@router.get("/messages/batches/{batch_id}", responses=ok(schemas.MessageBatch))
async def retrieve_batch(request: Request, batch_id: str) -> JSONBytes:
    batch = await runtime_of(request).service.get_batch(scope_of(request), batch_id)
    return await _shown(request, batch)


@router.post("/messages/batches/{batch_id}/cancel", responses=ok(schemas.MessageBatch))
async def cancel_batch(request: Request, batch_id: str) -> JSONBytes:
    batch = await runtime_of(request).service.cancel_batch(scope_of(request), batch_id)
    return await _shown(request, batch)


@router.delete("/messages/batches/{batch_id}", responses=ok(schemas.MessageBatchDeleted))
async def delete_batch(request: Request, batch_id: str) -> JSONBytes:
    batch = await message_batches(request).delete(scope_of(request), batch_id)
    return JSONBytes({"id": ANTHROPIC.show_batch_id(batch.id), "type": "message_batch_deleted"})


@router.get(
    "/messages/batches/{batch_id}/results",
    name="anthropic_batch_results",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One JSON line per request, in no particular order.",
            "content": {"application/x-jsonl": {"schema": {"type": "string"}}},
        }
    },
)
async def batch_results(request: Request, batch_id: str) -> StreamingResponse:
    _, lines = await message_batches(request).results(scope_of(request), batch_id)
    return StreamingResponse(lines, media_type="application/x-jsonl")


class RetryBatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    outcomes: list[StrictStr] | None = None


@router.post("/messages/batches/{batch_id}/retry", responses=ok(schemas.MessageBatch))
async def retry_batch(request: Request, batch_id: str, body: RetryBatchBody) -> JSONBytes:
    """Overnight's own route (docs/results-and-retry.md): a new Message
    Batch of the requests whose result was `errored` (`failed`), `expired`
    or `canceled` (`cancelled`)."""
    batch = await Retries(runtime_of(request).service).retry(
        scope_of(request), batch_id, outcomes=body.outcomes
    )
    return await _shown(request, batch)
