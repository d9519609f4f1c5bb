"""Result lines: what one request produced, rendered in a dialect's shape.

The runner appends rendered lines to a chunk's output or error part as
results arrive, so finalising a batch is a byte-for-byte concatenation.
The shape is fixed when the batch is created: its dialect's `render`
(domain/dialects.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from overnight._ids import new_request_id
from overnight.domain.lines import Unreadable
from overnight.domain.status import StopReason
from overnight.translate import messages


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one request.

    `status_code` and `body` are the upstream's answer; `error_code` is set
    instead when there was no answer (never ran, or the transport failed).
    """

    custom_id: str
    status_code: int | None = None
    body: Any = None
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error_code is None and self.status_code is not None and self.status_code < 400

    @classmethod
    def never_ran(cls, custom_id: str, code: str, message: str) -> Outcome:
        return cls(custom_id, error_code=code, error_message=message)

    @classmethod
    def unreadable(cls, line: Unreadable) -> Outcome:
        """A line of a chunk that no longer reads as a request."""
        return cls.never_ran(line.custom_id, line.error.code, line.error.message)

    @classmethod
    def stopped(cls, custom_id: str, reason: StopReason) -> Outcome:
        """A line the batch's cancel or expiry kept from running: the one
        never-ran line of execution (cut off) and finalisation (skipped)."""
        return cls.never_ran(custom_id, reason.error_code, reason.never_ran_message)


def render_openai(outcome: Outcome) -> bytes:
    """`{"id", "custom_id", "response": {status_code, request_id, body}, "error"}`."""
    response = None
    error = None
    if outcome.error_code is None:
        response = {
            "status_code": outcome.status_code,
            "request_id": outcome.request_id or new_request_id(),
            "body": outcome.body,
        }
    else:
        error = {"code": outcome.error_code, "message": outcome.error_message}
    return orjson.dumps(
        {
            "id": new_request_id(),
            "custom_id": outcome.custom_id,
            "response": response,
            "error": error,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def render_together(outcome: Outcome) -> bytes:
    """Together: `{"id": "br_…", "custom_id", "response": {status_code, body}}`
    for successes, `{"custom_id", "error": {message, code}}` for failures."""
    if outcome.succeeded:
        line: dict[str, Any] = {
            "id": "br_" + new_request_id().removeprefix("batch_req_"),
            "custom_id": outcome.custom_id,
            "response": {"status_code": outcome.status_code, "body": outcome.body},
        }
    elif outcome.error_code is None:
        line = {
            "custom_id": outcome.custom_id,
            "error": {
                "message": _upstream_message(outcome.body),
                "code": outcome.status_code,
            },
            "response": {"status_code": outcome.status_code, "body": outcome.body},
        }
    else:
        line = {
            "custom_id": outcome.custom_id,
            "error": {"message": outcome.error_message, "code": outcome.error_code},
        }
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


#: Never-ran codes that are the request's own fault; the rest are ours.
_INVALID_REQUEST_CODES = frozenset({"model_not_found", "invalid_json_line", "invalid_request"})
_STOP_RESULTS = {
    StopReason.CANCELLED.error_code: "canceled",
    StopReason.EXPIRED.error_code: "expired",
}


def render_anthropic(outcome: Outcome) -> bytes:
    """Anthropic: `{"custom_id", "result": {...}}`, the result one of
    `{"type": "succeeded", "message"}`, `{"type": "errored", "error"}`
    (an error response, `{"type": "error", "error": {type, message}}`),
    `{"type": "canceled"}` or `{"type": "expired"}`."""
    result: dict[str, Any]
    if outcome.succeeded:
        result = {"type": "succeeded", "message": outcome.body}
    elif outcome.error_code in _STOP_RESULTS:
        result = {"type": _STOP_RESULTS[outcome.error_code]}
    elif outcome.error_code is None:  # the model server answered an error
        assert outcome.status_code is not None
        result = {
            "type": "errored",
            "error": messages.upstream_error(outcome.status_code, outcome.body),
        }
    else:  # no answer: it never ran, or the server could not be reached
        status = 400 if outcome.error_code in _INVALID_REQUEST_CODES else None
        message = f"{outcome.error_code}: {outcome.error_message}"
        result = {"type": "errored", "error": messages.error_body(status, message)}
    return orjson.dumps(
        {"custom_id": outcome.custom_id, "result": result}, option=orjson.OPT_APPEND_NEWLINE
    )


def was_stopped(line: Any) -> bool:
    """Whether a rendered error line (parsed back, in any dialect's shape)
    is one a cancel or an expiry kept from running: how a resumed chunk
    counts its `stopped` lines again."""
    if not isinstance(line, dict):
        return False
    error, result = line.get("error"), line.get("result")
    if isinstance(error, dict) and error.get("code") in _STOP_RESULTS:
        return True
    return isinstance(result, dict) and result.get("type") in ("canceled", "expired")


def _upstream_message(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return "The model server returned an error."


#: One result line from one outcome; each `Dialect` carries its own.
Renderer = Callable[[Outcome], bytes]
