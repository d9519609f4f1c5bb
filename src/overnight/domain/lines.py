"""One input line: what makes it valid, and what it holds once it is.

The same checks run at validation time (every line, once) and at execution
time (a chunk re-reads its lines), so a line that passed validation is
interpreted identically when it runs. Pure code: bytes in, a value out.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from overnight.domain.batch import LineError

MAX_CUSTOM_ID_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Request:
    """A valid line: the request to send and the id that joins its result."""

    custom_id: str
    model: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LineRules:
    """What a line must satisfy for one batch."""

    endpoint: str
    #: Names of the configured models; None accepts any model (used when
    #: re-reading lines that were already validated).
    models: Collection[str] | None = None
    #: OpenAI lines must carry `method` and `url`; Together lines may omit
    #: them and take them from the batch.
    require_method_and_url: bool = True
    max_custom_id_length: int = MAX_CUSTOM_ID_LENGTH
    #: Longest line in bytes (newline excluded); None: no limit (re-reading).
    max_line_bytes: int | None = None


def is_blank(raw: bytes) -> bool:
    """Blank lines (and a trailing newline at the end of a file) are skipped."""
    return not raw.strip()


class _Body(msgspec.Struct):
    """The part of a body validation reads; every other field is skipped."""

    model: str
    stream: Any = None


class _Line(msgspec.Struct):
    custom_id: str
    body: _Body
    method: Any = None
    url: Any = None


_decode_line = msgspec.json.Decoder(_Line).decode


def quick_check(raw: bytes, rules: LineRules) -> tuple[str, str] | None:
    """(custom_id, model) of a line that is valid, or None when the line
    needs the full check (`check_line`), which names the problem.

    This is validation's fast path: msgspec decodes into a typed struct in C
    and skips the body's other fields without building them, which is most
    of the cost of checking a line. It accepts only what `check_line`
    accepts, so a None just means "ask the precise checker"."""
    if rules.max_line_bytes is not None and len(raw) > rules.max_line_bytes:
        return None
    try:
        line = _decode_line(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None
    custom_id = line.custom_id
    body = line.body
    if (
        not custom_id
        or len(custom_id) > rules.max_custom_id_length
        or body.stream is True
        or not body.model
        or (rules.models is not None and body.model not in rules.models)
    ):
        return None
    method, url = line.method, line.url
    if method is None or url is None:
        if rules.require_method_and_url:
            return None
        if (method is not None and method != "POST") or (url is not None and url != rules.endpoint):
            return None
    elif method != "POST" or url != rules.endpoint:
        return None
    return custom_id, body.model


def strip_bom(raw: bytes, line: int) -> bytes:
    """Drop a UTF-8 byte-order mark at the start of the file."""
    return raw[3:] if line == 1 and raw.startswith(b"\xef\xbb\xbf") else raw


def check_line(raw: bytes, line: int, rules: LineRules) -> Request | LineError:
    """Check one line (without its newline). Never raises. The length limit
    counts every byte of the line as stored, a byte-order mark included."""
    if rules.max_line_bytes is not None and len(raw) > rules.max_line_bytes:
        return LineError(
            "line_too_long",
            f"Line {line} is longer than the limit of {rules.max_line_bytes} bytes.",
            line,
        )
    raw = strip_bom(raw, line)
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "invalid UTF-8" if "utf-8" in str(exc).lower() else "invalid JSON"
        return LineError("invalid_json_line", f"Line {line} is not valid JSON ({reason}).", line)
    if not isinstance(value, dict):
        return LineError("invalid_json_line", f"Line {line} is not a JSON object.", line)
    return check_request(value, line, rules)


def check_request(value: dict[str, Any], line: int, rules: LineRules) -> Request | LineError:
    custom_id = value.get("custom_id")
    if custom_id is None:
        return _missing("custom_id", line)
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(
            "invalid_request",
            f"Line {line}: custom_id must be a non-empty string.",
            line,
            "custom_id",
        )
    if len(custom_id) > rules.max_custom_id_length:
        return LineError(
            "custom_id_too_long",
            f"Line {line}: custom_id is longer than {rules.max_custom_id_length} characters.",
            line,
            "custom_id",
        )

    method = value.get("method")
    if method is None:
        if rules.require_method_and_url:
            return _missing("method", line)
    elif method != "POST":
        return LineError(
            "invalid_method",
            f"Line {line}: method must be 'POST', not {_show(method)}.",
            line,
            "method",
        )

    url = value.get("url")
    if url is None:
        if rules.require_method_and_url:
            return _missing("url", line)
    elif url != rules.endpoint:
        return LineError(
            "invalid_url",
            f"Line {line}: url {_show(url)} does not match the batch endpoint {rules.endpoint!r}.",
            line,
            "url",
        )

    body = value.get("body")
    if body is None:
        return _missing("body", line)
    if not isinstance(body, dict):
        return LineError(
            "invalid_request", f"Line {line}: body must be a JSON object.", line, "body"
        )

    model = body.get("model")
    if model is None:
        return _missing("body.model", line)
    if not isinstance(model, str) or not model:
        return LineError(
            "invalid_request",
            f"Line {line}: body.model must be a non-empty string.",
            line,
            "body.model",
        )
    if rules.models is not None and model not in rules.models:
        return LineError(
            "model_not_found",
            f"Line {line}: the model {model!r} is not served here; served: {_names(rules.models)}.",
            line,
            "body.model",
        )
    if body.get("stream") is True:
        return LineError(
            "streaming_unsupported",
            f"Line {line}: streaming is not supported in batches; remove body.stream.",
            line,
            "body.stream",
        )
    return Request(custom_id, model, body)


def _missing(param: str, line: int) -> LineError:
    return LineError(
        "missing_required_parameter",
        f"Line {line} is missing the required parameter {param!r}.",
        line,
        param,
    )


def _names(models: Collection[str]) -> str:
    shown = sorted(models)[:10]
    return ", ".join(shown) + (", ..." if len(models) > len(shown) else "")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
