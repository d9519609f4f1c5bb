"""The routes every batch dialect shares for results while a batch runs and
for retries: `GET .../batches/{id}/output`, `.../errors` (streamed JSONL)
and the answer they give. Dialects mount these under their own prefix and
render a retry's batch in their own shape."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import StreamingResponse

from overnight.api.auth import scope_of
from overnight.api.responses import runtime_of
from overnight.batch_results import BatchResults
from overnight.domain.result_cursor import ResultKind
from overnight.errors import InvalidRequest
from overnight.retries import Retries

#: Response headers: whether more lines may come, and the cursor for them.
INCOMPLETE = "X-Overnight-Incomplete"
NEXT_AFTER = "X-Overnight-Next-After"
MEDIA_TYPE = "application/x-jsonl"

RESULTS_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": (
            "Result lines (JSONL) written so far, after the cursor `after`. Headers: "
            f"`{INCOMPLETE}` (`true` while the batch runs) and `{NEXT_AFTER}` (pass it "
            "as `after` for the lines that come next)."
        ),
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
        "headers": {
            INCOMPLETE: {
                "description": "`true` while the batch has not ended.",
                "schema": {"type": "string", "enum": ["true", "false"]},
            },
            NEXT_AFTER: {
                "description": "The cursor for the lines that come next (not on a merged read).",
                "schema": {"type": "string"},
            },
        },
    }
}


async def results_response(
    request: Request, batch_id: str, kind: ResultKind, after: str | None, merged: bool
) -> StreamingResponse:
    service = runtime_of(request).service
    scope = scope_of(request)
    if merged:
        if after is not None:
            raise InvalidRequest(
                "A merged download is read whole; it takes no after cursor.",
                param="after",
                code="invalid_value",
            )
        _, lines = await Retries(service).merged(scope, batch_id, kind)
        return StreamingResponse(lines, media_type=MEDIA_TYPE, headers={INCOMPLETE: "false"})
    found = await BatchResults(service).so_far(scope, batch_id, kind, after)
    headers = {INCOMPLETE: "true" if found.incomplete else "false", NEXT_AFTER: found.next_after}
    return StreamingResponse(found.lines, media_type=MEDIA_TYPE, headers=headers)


#: The two routes, mounted by the OpenAI and Together dialects under their
#: own prefixes and tags (`include_router`).
router = APIRouter()


@router.get(
    "/batches/{batch_id}/output",
    response_class=StreamingResponse,
    responses=RESULTS_RESPONSES,
)
async def batch_output(
    request: Request, batch_id: str, after: str | None = None, merged: bool = False
) -> StreamingResponse:
    return await results_response(request, batch_id, ResultKind.OUTPUT, after, merged)


@router.get(
    "/batches/{batch_id}/errors",
    response_class=StreamingResponse,
    responses=RESULTS_RESPONSES,
)
async def batch_errors(
    request: Request, batch_id: str, after: str | None = None, merged: bool = False
) -> StreamingResponse:
    return await results_response(request, batch_id, ResultKind.ERRORS, after, merged)
