"""A batch's errors, grouped by code: what `batches get` shows so that a
person sees "480 x http_429, 20 x chunk_failed" rather than 500 lines.

Pure: it reads error-file lines (in either dialect's shape) and the
batch's own validation errors, and counts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

#: Examples (custom_ids or line numbers) kept per group.
EXAMPLES = 3


@dataclass
class ErrorGroup:
    code: str
    message: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "count": self.count,
            "message": self.message,
            "examples": self.examples,
        }


def group_errors(batch: dict[str, Any], error_lines: Iterable[bytes]) -> list[ErrorGroup]:
    """Groups, largest first: validation errors (which name input lines)
    and then the error file's lines (which name custom_ids)."""
    groups: dict[str, ErrorGroup] = {}

    def add(code: str, message: str, example: str) -> None:
        group = groups.setdefault(code, ErrorGroup(code, message))
        group.count += 1
        if len(group.examples) < EXAMPLES:
            group.examples.append(example)

    for error in (batch.get("errors") or {}).get("data") or []:
        line = error.get("line")
        add(
            str(error.get("code") or "invalid"),
            str(error.get("message") or ""),
            f"line {line}" if line is not None else "-",
        )
    for raw in error_lines:
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            add("unreadable_result", "a line of the error file is not JSON", "-")
            continue
        if isinstance(row, dict):
            code, message = code_of(row)
            add(code, message, str(row.get("custom_id", "-")))
    return sorted(groups.values(), key=lambda group: -group.count)


def code_of(row: dict[str, Any]) -> tuple[str, str]:
    """An error line's code and message: its `error` when the request never
    got an answer, else the upstream's status (`http_500`) and message."""
    response = row.get("response") if isinstance(row.get("response"), dict) else None
    error = row.get("error")
    if isinstance(error, dict) and error.get("code") and response is None:
        return str(error["code"]), str(error.get("message") or "")
    status = response.get("status_code") if response else None
    if status is None and isinstance(error, dict):
        status = error.get("code")
    body = response.get("body") if response else None
    upstream = body.get("error") if isinstance(body, dict) else None
    message = ""
    if isinstance(upstream, dict):
        message = str(upstream.get("message") or "")
    elif isinstance(error, dict):
        message = str(error.get("message") or "")
    return (f"http_{status}" if status is not None else "unknown"), message
