"""Rendering errors: one function per dialect, chosen by URL prefix.

Every error carries `x-request-id`. Errors a client should not retry carry
`x-should-retry: false`, which the official SDKs honour (they otherwise
retry 408, 409, 429 and 5xx).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from overnight import _json
from overnight.errors import InvalidRequest, NotFound, OvernightError

log = logging.getLogger("overnight.api")

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def openai_error_body(error: OvernightError) -> dict[str, Any]:
    fallback = "invalid_request_error" if error.status_code < 500 else "server_error"
    return {
        "error": {
            "message": _text(error.message),
            "type": _OPENAI_TYPES.get(error.status_code, fallback),
            "param": _text(error.param),
            "code": error.code,
        }
    }


def anthropic_error_body(error: OvernightError) -> dict[str, Any]:
    fallback = "invalid_request_error" if error.status_code < 500 else "api_error"
    return {
        "type": "error",
        "error": {
            "type": _ANTHROPIC_TYPES.get(error.status_code, fallback),
            "message": _text(error.message),
        },
    }


def _text(value: str | None) -> str | None:
    """Messages quote what the client sent; text that is not valid Unicode
    (a lone surrogate from a JSON escape) is replaced, not a reason to fail."""
    if value is None:
        return None
    return value.encode("utf-8", "replace").decode("utf-8")


def error_response(request: Request, error: OvernightError) -> Response:
    if request.url.path.startswith("/anthropic/"):
        body = anthropic_error_body(error)
    else:  # OpenAI and Together share one envelope
        body = openai_error_body(error)
    headers = {}
    if not error.retryable:
        headers["x-should-retry"] = "false"
    if error.retry_after is not None:
        # Whole seconds by the HTTP spec; the official SDKs read the exact
        # wait from `retry-after-ms` first.
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
        headers["retry-after-ms"] = str(max(1, math.ceil(error.retry_after * 1000)))
    return Response(
        _json.dumps(body),
        status_code=error.status_code,
        media_type="application/json",
        headers=headers,
    )


async def handle_overnight_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OvernightError)
    log_server_error(request, exc)
    return error_response(request, exc)


def log_server_error(request: Request, error: OvernightError) -> None:
    """Log an error that is ours, not the client's; with the traceback of
    the foreign error it was translated from (a database's, say), which
    the client is never shown."""
    if error.status_code >= 500:
        log.error(
            "%s %s failed: %s",
            request.method,
            request.url.path,
            error.message,
            exc_info=error if error.__cause__ is not None else None,
        )


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    param = ".".join(location) or None
    message = first.get("msg", "Invalid request.")
    code = "invalid_value"
    if first.get("type") == "json_invalid":
        message, param, code = "The request body is not valid JSON.", None, "invalid_json"
    elif first.get("type") == "missing" and param:
        message, code = f"{param} is required.", "missing_required_parameter"
    elif not param:
        message = "The request body must be a JSON object (Content-Type: application/json)."
    elif param:
        message = f"{param}: {message}"
    return error_response(request, InvalidRequest(message, param=param, code=code))


#: FastAPI's detail when parsing a JSON body raised anything but a syntax error.
_FASTAPI_BODY_ERROR = "There was an error parsing the body"


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: OvernightError = NotFound(
            f"No route for {request.method} {request.url.path}.", code="unknown_url"
        )
    elif exc.status_code == 405:
        error = OvernightError(
            f"{request.method} is not allowed on {request.url.path}.", code="method_not_allowed"
        )
        error.status_code = 405
    elif exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
        # FastAPI's word for a JSON body its parser choked on beyond a syntax
        # error: nested too deeply, an integer of too many digits, bytes
        # that are not UTF-8. All are bodies that are not JSON we can read.
        error = InvalidRequest(
            "The request body is not valid JSON (nested too deeply, a number out of range, "
            "or not UTF-8).",
            code="invalid_json",
        )
    else:
        error = OvernightError(str(exc.detail), code="http_error")
        error.status_code = exc.status_code
    return error_response(request, error)


async def handle_client_gone(request: Request, exc: Exception) -> Response:
    """A client that hangs up before its body has all arrived (a cancelled
    upload, a dropped network) is an everyday event, not a fault: one line,
    no traceback. Whatever it sent is already dropped (the upload's sink
    aborts); the answer goes nowhere, as nobody is listening."""
    assert isinstance(exc, ClientDisconnect)
    log.info(
        "%s %s: the client went away before sending its whole body",
        request.method,
        request.url.path,
    )
    return Response(status_code=400)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, OvernightError("The server hit an unexpected error."))
