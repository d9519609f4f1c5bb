"""The dialects a batch speaks, each one typed object: what its input lines
must carry, how its result lines look, what its statuses and batch ids are
called. Code that depends on the dialect asks the batch's `Dialect`; it
never compares names.

The store keeps only `Dialect.name` (a string column); `dialect_named` turns
it back into the object once, where a `Batch` or a `ChunkWork` is built.
An unknown name fails loudly there, instead of a batch quietly being
rendered in another dialect's shape.

Adding a dialect is adding one `Dialect` below and listing it in
`DIALECTS` (its HTTP routes live in an `api/` module of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from overnight._ids import batch_uuid, message_batch_id
from overnight.domain.results import Renderer, render_anthropic, render_openai, render_together
from overnight.domain.status import BatchStatus, StopReason


class HasStatus(Protocol):
    """What naming a status needs of a batch (domain/batch.py's `Batch`,
    which imports this module)."""

    @property
    def status(self) -> BatchStatus: ...

    @property
    def stop_reason(self) -> StopReason | None: ...


#: The width of the store's `batches.dialect` column.
NAME_LENGTH = 16


class UnknownDialect(ValueError):
    """A stored or requested dialect name that no `Dialect` carries."""


@dataclass(frozen=True, slots=True, eq=False)
class Dialect:
    """Everything that differs between dialects once a request has been
    parsed. One instance per dialect: compared by identity, and unpickled
    as that same instance."""

    #: What the store keeps in `batches.dialect`.
    name: str
    #: Whether every input line must carry `method` and `url`. OpenAI's
    #: lines must; Together's may leave them out, and take the batch's.
    require_method_and_url: bool
    #: One result line, in the shape this dialect's SDK parses.
    render: Renderer
    #: Each status as this dialect's batch object names it.
    status_names: Mapping[BatchStatus, str]
    #: The name shown while a cancel drains into the result files
    #: (`finalizing` after a cancel); None shows `finalizing`'s own name.
    draining_cancel_name: str | None
    #: A stored batch id as this dialect shows it.
    show_batch_id: Callable[[str], str]

    def __post_init__(self) -> None:
        if not 0 < len(self.name) <= NAME_LENGTH:
            raise ValueError(f"a dialect's name has 1 to {NAME_LENGTH} characters: {self.name!r}")

    def status_of(self, batch: HasStatus) -> str:
        if (
            self.draining_cancel_name is not None
            and batch.status is BatchStatus.FINALIZING
            and batch.stop_reason is StopReason.CANCELLED
        ):
            return self.draining_cancel_name
        return self.status_names[batch.status]

    def __reduce__(self) -> tuple[Callable[[str], Dialect], tuple[str]]:
        return dialect_named, (self.name,)

    def __repr__(self) -> str:
        return f"Dialect({self.name!r})"


def _as_stored(batch_id: str) -> str:
    return batch_id


def _statuses(names: dict[BatchStatus, str]) -> Mapping[BatchStatus, str]:
    """A read-only table that names every status (checked here, once)."""
    missing = set(BatchStatus) - names.keys()
    if missing:
        raise ValueError(f"no name for {sorted(missing)}")
    return MappingProxyType(names)


OPENAI = Dialect(
    name="openai",
    require_method_and_url=True,
    render=render_openai,
    status_names=_statuses({status: status.value for status in BatchStatus}),
    draining_cancel_name=None,
    show_batch_id=_as_stored,
)

TOGETHER = Dialect(
    name="together",
    require_method_and_url=False,
    render=render_together,
    status_names=_statuses(
        {
            BatchStatus.VALIDATING: "VALIDATING",
            BatchStatus.IN_PROGRESS: "IN_PROGRESS",
            # Together has no FINALIZING (SDK 1.x's enum would reject it): the
            # result files are still being written, so the job is in progress.
            BatchStatus.FINALIZING: "IN_PROGRESS",
            BatchStatus.COMPLETED: "COMPLETED",
            BatchStatus.FAILED: "FAILED",
            BatchStatus.EXPIRED: "EXPIRED",
            BatchStatus.CANCELLING: "CANCELING",
            BatchStatus.CANCELLED: "CANCELLED",
        }
    ),
    draining_cancel_name="CANCELING",
    # Together's spec gives batch ids `format: uuid`: the same 128 bits.
    show_batch_id=batch_uuid,
)

_ENDED = "ended"

ANTHROPIC = Dialect(
    name="anthropic",
    # Its create writes every line with both (api/anthropic.py).
    require_method_and_url=True,
    render=render_anthropic,
    status_names=_statuses(
        {
            BatchStatus.VALIDATING: "in_progress",
            BatchStatus.IN_PROGRESS: "in_progress",
            BatchStatus.FINALIZING: "in_progress",
            BatchStatus.CANCELLING: "canceling",
            BatchStatus.COMPLETED: _ENDED,
            BatchStatus.FAILED: _ENDED,
            BatchStatus.EXPIRED: _ENDED,
            BatchStatus.CANCELLED: _ENDED,
        }
    ),
    draining_cancel_name="canceling",
    # Anthropic's batch ids are `msgbatch_...`: the same 128 bits.
    show_batch_id=message_batch_id,
)

#: Every dialect, by the name the store keeps.
DIALECTS: Mapping[str, Dialect] = MappingProxyType(
    {d.name: d for d in (OPENAI, TOGETHER, ANTHROPIC)}
)


def dialect_named(name: str) -> Dialect:
    """The dialect stored as `name`; UnknownDialect if there is none."""
    try:
        return DIALECTS[name]
    except KeyError:
        known = ", ".join(DIALECTS)
        raise UnknownDialect(f"No dialect is named {name!r}; known: {known}.") from None
