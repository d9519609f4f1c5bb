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
