"""Which result lines a retry takes: the outcomes a line can end in.

A batch's error file holds one line per request that did not succeed, in
its dialect's shape (domain/results.py). Each reads as one of three
outcomes:

- `expired`: the batch's window closed before the request ran (code
  `batch_expired`; Anthropic's result type `expired`);
- `cancelled`: the batch was cancelled before it ran (code
  `batch_cancelled`; Anthropic's `canceled`);
- `failed`: everything else in the error file: the model server answered
  an error status, could not be reached or timed out after the retries, or
  the line no longer read as a request when it was run (a model removed).

The output file's lines are successes and are never retried.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from overnight.domain.status import StopReason


class RetryOutcome(StrEnum):
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


ALL_OUTCOMES = frozenset(RetryOutcome)
#: Metadata keys a retry batch carries: the batch it retries, and which
#: outcomes it took (comma-separated, sorted).
RETRY_OF = "retry_of"
RETRY_OUTCOMES = "retry_outcomes"

_BY_CODE = {
    StopReason.EXPIRED.error_code: RetryOutcome.EXPIRED,
    StopReason.CANCELLED.error_code: RetryOutcome.CANCELLED,
}
_BY_RESULT_TYPE = {"expired": RetryOutcome.EXPIRED, "canceled": RetryOutcome.CANCELLED}


def outcomes_from(names: Iterable[str]) -> frozenset[RetryOutcome]:
    """The outcomes named, each one of `failed`, `expired`, `cancelled`
    (ValueError otherwise, or if none is named)."""
    chosen = frozenset(RetryOutcome(name) for name in names)
    if not chosen:
        raise ValueError("name at least one outcome")
    return chosen


def outcome_of(error_line: Any) -> RetryOutcome:
    """The outcome of one parsed error-file line, in any dialect's shape."""
    if isinstance(error_line, dict):
        result = error_line.get("result")
        if isinstance(result, dict):  # Anthropic
            return _BY_RESULT_TYPE.get(str(result.get("type")), RetryOutcome.FAILED)
        error = error_line.get("error")
        if isinstance(error, dict):  # OpenAI, Together
            code = error.get("code")
            if isinstance(code, str):
                return _BY_CODE.get(code, RetryOutcome.FAILED)
    return RetryOutcome.FAILED
