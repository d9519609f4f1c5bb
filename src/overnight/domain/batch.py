"""The batch, as every dialect and the runner see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overnight.domain.dialects import OPENAI, Dialect
from overnight.domain.lines import LineError
from overnight.domain.status import BatchStatus, StopReason
from overnight.types import BatchId, FileId, TenantId


@dataclass(frozen=True, slots=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0
    #: Of `failed`, the lines a cancel or an expiry kept from running.
    stopped: int = 0

    @property
    def done(self) -> int:
        return self.completed + self.failed


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage summed over every upstream response of a batch."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_tokens + other.cached_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    @classmethod
    def from_response(cls, body: Any) -> Usage:
        """Read an OpenAI-style `usage` object; anything missing counts as 0."""
        if not isinstance(body, dict):
            return ZERO_USAGE
        usage = body.get("usage")
        if not isinstance(usage, dict):
            return ZERO_USAGE
        prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
        prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
        completion_details = usage.get("completion_tokens_details") or usage.get(
            "output_tokens_details"
        )
        cached = (
            _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
        )
        reasoning = (
            _int(completion_details.get("reasoning_tokens"))
            if isinstance(completion_details, dict)
            else 0
        )
        return cls(prompt, cached, completion, reasoning)


ZERO_USAGE = Usage()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class Batch:
    id: BatchId
    tenant: TenantId
    endpoint: str
    input_file_id: FileId
    completion_window: str
    status: BatchStatus
    created_at: int
    expires_at: int
    dialect: Dialect = OPENAI
    model: str | None = None
    priority: int = 0
    metadata: dict[str, str] | None = None
    errors: tuple[LineError, ...] = ()
    request_counts: RequestCounts = field(default_factory=RequestCounts)
    usage: Usage = field(default_factory=Usage)
    output_file_id: FileId | None = None
    error_file_id: FileId | None = None
    input_bytes: int = 0
    stop_reason: StopReason | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    #: Times a worker died (or raised) validating or finalising it.
    crashes: int = 0
    #: Seconds the result files are kept once made; None keeps them until deleted.
    output_expires_after: int | None = None
    #: The grouped copy of the input its chunks read, when validation wrote
    #: one (runner/regroup.py); None: they read the input file.
    grouped_blob_key: str | None = None

    @property
    def progress(self) -> float:
        """Share of lines done, 0-100: what Together's `progress` shows."""
        total = self.request_counts.total
        if self.status is BatchStatus.COMPLETED:
            return 100.0
        if total <= 0:
            return 0.0
        return round(100.0 * self.request_counts.done / total, 2)

    @property
    def ended_at(self) -> int | None:
        return self.completed_at or self.failed_at or self.expired_at or self.cancelled_at
