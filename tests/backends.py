"""The storage backends the acceptance suite runs on: SQLite with a local
data directory (the default), and PostgreSQL with S3-compatible storage
(moto's S3 server on loopback). Each server started by a test gets its own
database and bucket, dropped at the end of the run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

PG_HOST = os.environ.get("OVERNIGHT_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("OVERNIGHT_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("OVERNIGHT_TEST_PG_USER", "root")
PG_ADMIN_DB = os.environ.get("OVERNIGHT_TEST_PG_DB", "test")
#: Set in CI: a missing PostgreSQL fails the run instead of skipping.
REQUIRE_POSTGRES = os.environ.get("OVERNIGHT_REQUIRE_POSTGRES") == "1"


async def _admin(statements: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB, timeout=5
    )
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


class Postgres:
    """Creates throw-away databases on the machine's PostgreSQL, and drops
    them again. A drop costs about a second (PostgreSQL checkpoints), so
    databases a module is done with are dropped by a thread while the next
    modules run, instead of all at the end of the run."""

    def __init__(self) -> None:
        self.prefix = f"overnight_test_{secrets.token_hex(4)}"
        self.created: list[str] = []
        self._dropped: set[str] = set()
        self._to_drop: queue.Queue[str | None] = queue.Queue()
        self._dropper: threading.Thread | None = None

    def new_database(self) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        asyncio.run(_admin([f'CREATE DATABASE "{name}"']))
        self.created.append(name)
        return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    def drop_later(self, urls: list[str]) -> None:
        """Hands databases (by URL) to the dropping thread."""
        if self._dropper is None:
            self._dropper = threading.Thread(target=self._drop_queued, daemon=True)
            self._dropper.start()
        for url in urls:
            self._to_drop.put(url.rsplit("/", 1)[-1])

    def _drop_queued(self) -> None:
        while (name := self._to_drop.get()) is not None:
            with contextlib.suppress(Exception):  # what is left is dropped at the end
                asyncio.run(_admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']))
                self._dropped.add(name)

    def drop_all(self) -> None:
        if self._dropper is not None:
            self._to_drop.put(None)
            self._dropper.join()
        left = [name for name in self.created if name not in self._dropped]
        asyncio.run(_admin([f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in left]))


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        asyncio.run(_admin(["SELECT 1"]))
    except Exception as exc:  # any failure means "not here"
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class Backend:
    name: str
    postgres: Postgres | None = None
    s3_endpoint: str | None = None
    databases: list[str] = field(default_factory=list)

    def settings(self) -> dict[str, Any]:
        """Settings for one new server on this backend."""
        if self.postgres is None or self.s3_endpoint is None:
            return {}
        self.databases.append(self.postgres.new_database())
        return {
            "database_url": self.databases[-1],
            "storage_url": f"s3://overnight-{secrets.token_hex(4)}/data",
            "s3_endpoint_url": self.s3_endpoint,
            "s3_access_key_id": "test",
            "s3_secret_access_key": "test",
            "s3_create_bucket": True,
        }


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    problem = postgres_available()
    if problem is not None:
        message = (
            f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER} ({problem}); "
            "the PostgreSQL + S3 half of the acceptance suite cannot run"
        )
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip("SKIPPED LOUDLY: " + message)
    pg = Postgres()
    yield pg
    pg.drop_all()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from helpers import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres+s3"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The module's backend; on PostgreSQL, the databases its servers used
    are dropped once the module (and so every server on them) is done."""
    if request.param == "sqlite":
        yield Backend("sqlite")
        return
    postgres: Postgres = request.getfixturevalue("postgres")
    backend = Backend(request.param, postgres, request.getfixturevalue("s3_endpoint"))
    yield backend
    postgres.drop_later(backend.databases)
