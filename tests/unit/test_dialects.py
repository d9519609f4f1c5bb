"""The dialect registry: each dialect is one object that names every status,
renders every outcome in its own shape, and decides its line rules; the
store's name for it is parsed once, and an unknown name fails loudly.

The runner's use is checked through `validate_batch` on a real SQLite store
and real files: a Together batch takes lines without `method` and `url`,
an OpenAI batch refuses them.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from overnight.blobs import BlobStore, open_blobs
from overnight.domain.batch import Batch
from overnight.domain.dialects import (
    ANTHROPIC,
    DIALECTS,
    OPENAI,
    TOGETHER,
    Dialect,
    UnknownDialect,
    dialect_named,
)
from overnight.domain.files import FilePurpose, FileRecord
from overnight.domain.results import Outcome
from overnight.domain.status import BatchStatus, StopReason
from overnight.runner.validate import validate_batch
from overnight.settings import ModelSettings, Settings
from overnight.store.schema import batches
from overnight.store.sql import SqlStore, open_store
from overnight.types import BatchId, FileId, TenantId, WorkerId

WORKER = WorkerId("w-1")


def batch(dialect: Dialect, status: BatchStatus = BatchStatus.VALIDATING, **changes: Any) -> Batch:
    fields: dict[str, Any] = {
        "id": BatchId(f"batch_{'0' * 31}1"),
        "tenant": TenantId("t"),
        "endpoint": "/v1/chat/completions",
        "input_file_id": FileId("file-in"),
        "completion_window": "24h",
        "status": status,
        "created_at": 0,
        "expires_at": 10**10,
        "dialect": dialect,
        **changes,
    }
    return Batch(**fields)


# ------------------------------------------------------------------ registry


def test_each_dialect_is_found_by_the_name_the_store_keeps() -> None:
    assert set(DIALECTS) == {"openai", "together", "anthropic"}
    for name, dialect in DIALECTS.items():
        assert dialect.name == name
        assert dialect_named(name) is dialect


@pytest.mark.parametrize("name", ["claude", "", "OpenAI", "together "])
def test_an_unknown_name_fails_loudly(name: str) -> None:
    with pytest.raises(UnknownDialect, match="known: openai, together, anthropic"):
        dialect_named(name)


def test_a_dialect_survives_pickling_as_the_same_object() -> None:
    for dialect in DIALECTS.values():
        assert pickle.loads(pickle.dumps(dialect)) is dialect


def test_a_name_wider_than_the_store_column_is_refused() -> None:
    with pytest.raises(ValueError, match="1 to 16 characters"):
        Dialect(
            name="x" * 17,
            require_method_and_url=True,
            render=OPENAI.render,
            status_names=OPENAI.status_names,
            draining_cancel_name=None,
            show_batch_id=OPENAI.show_batch_id,
        )


# ------------------------------------------------------------------ statuses


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
@pytest.mark.parametrize("status", list(BatchStatus))
def test_every_dialect_names_every_status(dialect: Dialect, status: BatchStatus) -> None:
    for reason in (None, *StopReason):
        assert dialect.status_of(batch(dialect, status, stop_reason=reason))


def test_openai_shows_the_statuses_as_they_are_stored() -> None:
    for status in BatchStatus:
        assert OPENAI.status_of(batch(OPENAI, status)) == status.value
    draining = batch(OPENAI, BatchStatus.FINALIZING, stop_reason=StopReason.CANCELLED)
    assert OPENAI.status_of(draining) == "finalizing"


def test_together_shows_a_draining_cancel_as_canceling() -> None:
    draining = batch(TOGETHER, BatchStatus.FINALIZING, stop_reason=StopReason.CANCELLED)
    assert TOGETHER.status_of(draining) == "CANCELING"
    assert TOGETHER.status_of(batch(TOGETHER, BatchStatus.FINALIZING)) == "IN_PROGRESS"
    assert TOGETHER.status_of(batch(TOGETHER, BatchStatus.CANCELLING)) == "CANCELING"


def test_anthropic_shows_in_progress_canceling_and_ended() -> None:
    shown = {status: ANTHROPIC.status_of(batch(ANTHROPIC, status)) for status in BatchStatus}
    assert set(shown.values()) == {"in_progress", "canceling", "ended"}
    assert {s for s, name in shown.items() if name == "ended"} == {
        s for s in BatchStatus if s.is_terminal
    }
    draining = batch(ANTHROPIC, BatchStatus.FINALIZING, stop_reason=StopReason.CANCELLED)
    assert ANTHROPIC.status_of(draining) == "canceling"
    expiring = batch(ANTHROPIC, BatchStatus.FINALIZING, stop_reason=StopReason.EXPIRED)
    assert ANTHROPIC.status_of(expiring) == "in_progress"


def test_batch_ids_show_as_stored_in_openai_as_uuids_in_together_and_msgbatch_in_anthropic() -> (
    None
):
    stored = "batch_" + "0123456789abcdef" * 2
    assert OPENAI.show_batch_id(stored) == stored
    assert TOGETHER.show_batch_id(stored) == "01234567-89ab-cdef-0123-456789abcdef"
    assert ANTHROPIC.show_batch_id(stored) == "msgbatch_" + "0123456789abcdef" * 2


# ------------------------------------------------------------- result lines

SUCCESS = Outcome("ok", 200, {"choices": []}, "req_1")
UPSTREAM_ERROR = Outcome("bad", 400, {"error": {"message": "no such model"}}, "req_2")
NEVER_RAN = Outcome.never_ran("late", "batch_expired", "The batch expired.")


def openai_line(row: dict[str, Any], outcome: Outcome) -> None:
    """OpenAI's batch output line: every key always present; an upstream
    answer (2xx or not) is a `response`, only a request that got none has an
    `error`."""
    assert set(row) == {"id", "custom_id", "response", "error"}
    assert row["id"].startswith("batch_req_")
    if outcome.error_code is None:
        assert row["response"] == {
            "status_code": outcome.status_code,
            "request_id": outcome.request_id,
            "body": outcome.body,
        }
        assert row["error"] is None
    else:
        assert row["response"] is None
        assert row["error"] == {"code": outcome.error_code, "message": outcome.error_message}


def together_line(row: dict[str, Any], outcome: Outcome) -> None:
    """Together's: a success has a `br_` id and a `response`; a failure has
    an `error` with a message and a code (the HTTP status when upstream
    answered, with the answer kept as `response`)."""
    if outcome.succeeded:
        assert set(row) == {"id", "custom_id", "response"}
        assert row["id"].startswith("br_")
        assert row["response"] == {"status_code": outcome.status_code, "body": outcome.body}
    elif outcome.error_code is None:
        assert set(row) == {"custom_id", "error", "response"}
        assert row["error"] == {"message": "no such model", "code": outcome.status_code}
        assert row["response"] == {"status_code": outcome.status_code, "body": outcome.body}
    else:
        assert set(row) == {"custom_id", "error"}
        assert row["error"] == {"message": outcome.error_message, "code": outcome.error_code}


def anthropic_line(row: dict[str, Any], outcome: Outcome) -> None:
    """Anthropic's: `{"custom_id", "result"}`, the result typed: a success
    holds the Message, an upstream error an error response typed by its
    status, a line the window's close kept from running is `expired`."""
    assert set(row) == {"custom_id", "result"}
    result = row["result"]
    if outcome.succeeded:
        assert result == {"type": "succeeded", "message": outcome.body}
    elif outcome.error_code is None:
        assert result == {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "no such model"},
            },
        }
    else:
        assert result == {"type": "expired"}


#: The line each dialect's users parse; a new dialect adds its own here.
LINE_SHAPES: dict[str, Callable[[dict[str, Any], Outcome], None]] = {
    "openai": openai_line,
    "together": together_line,
    "anthropic": anthropic_line,
}


def test_every_dialect_has_its_line_shape_checked() -> None:
    assert set(LINE_SHAPES) == set(DIALECTS)


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
@pytest.mark.parametrize("outcome", [SUCCESS, UPSTREAM_ERROR, NEVER_RAN], ids=lambda o: o.custom_id)
def test_every_dialect_renders_an_outcome_in_its_own_shape(
    dialect: Dialect, outcome: Outcome
) -> None:
    line = dialect.render(outcome)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    row = json.loads(line)
    assert row["custom_id"] == outcome.custom_id
    LINE_SHAPES[dialect.name](row, outcome)


# ------------------------------------------------------ the store and runner


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path, models=[ModelSettings(name="m", base_urls=["http://127.0.0.1:9"])]
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SqlStore]:
    store = await open_store(settings.resolved_database_url)
    yield store
    await store.close()


@pytest.fixture
def blobs(settings: Settings) -> BlobStore:
    return open_blobs(settings)


async def add_input(store: SqlStore, blobs: BlobStore, lines: list[dict[str, Any]]) -> FileId:
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    writer = blobs.writer("files/file-in")
    await writer.write(data)
    await writer.commit()
    record = FileRecord(
        id=FileId("file-in"),
        tenant=TenantId("t"),
        filename="in.jsonl",
        purpose=FilePurpose.BATCH,
        bytes=len(data),
        created_at=0,
        sha256=writer.sha256,
        blob_key="files/file-in",
    )
    await store.insert_file(record, created_us=0)
    return record.id


async def test_the_store_keeps_the_name_and_gives_back_the_dialect(store: SqlStore) -> None:
    for index, dialect in enumerate(DIALECTS.values()):
        stored = batch(dialect, id=BatchId(f"batch_{index}"))
        await store.insert_batch(stored, created_us=index)
        loaded = await store.get_batch(None, stored.id)
        assert loaded is not None and loaded.dialect is dialect
    async with store.write_engine.connect() as conn:
        names = (await conn.execute(sa.select(batches.c.dialect))).scalars().all()
    assert sorted(names) == sorted(DIALECTS)


async def test_a_stored_name_no_dialect_carries_fails_loudly_when_read(store: SqlStore) -> None:
    await store.insert_batch(batch(OPENAI), created_us=0)
    async with store.write_engine.begin() as conn:
        await conn.execute(sa.update(batches).values(dialect="klingon"))
    with pytest.raises(UnknownDialect, match="klingon"):
        await store.get_batch(None, batch(OPENAI).id)


#: Lines that leave `method` and `url` out, as Together's docs show them.
BARE_LINES = [
    {"custom_id": "a", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}},
    {"custom_id": "b", "body": {"model": "m", "messages": [{"role": "user", "content": "yo"}]}},
]


@pytest.mark.parametrize(
    ("dialect", "outcome"),
    [(TOGETHER, BatchStatus.IN_PROGRESS), (OPENAI, BatchStatus.FAILED)],
    ids=["together-takes-them", "openai-refuses-them"],
)
async def test_validation_asks_the_dialect_whether_method_and_url_are_required(
    store: SqlStore,
    blobs: BlobStore,
    settings: Settings,
    dialect: Dialect,
    outcome: BatchStatus,
) -> None:
    await add_input(store, blobs, BARE_LINES)
    await store.insert_batch(batch(dialect), created_us=0)
    claimed = await store.claim_validation(WORKER, 0, 10.0)
    assert claimed is not None and claimed.dialect is dialect

    await validate_batch(
        claimed,
        worker=WORKER,
        store=store,
        blobs=blobs,
        settings=settings,
        model_names=frozenset({"m"}),
    )

    validated = await store.get_batch(None, claimed.id)
    assert validated is not None and validated.status is outcome
    if outcome is BatchStatus.FAILED:
        assert {(e.line, e.param) for e in validated.errors} == {
            (1, "method"),
            (2, "method"),
        }
    else:
        assert validated.request_counts.total == 2
