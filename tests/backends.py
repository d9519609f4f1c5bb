"""The storage backends the acceptance suite runs on: SQLite with a local
data directory (the default), and PostgreSQL with S3-compatible storage
(moto's S3 server on loopback). Each server started by a test gets its own
database and bucket, dropped at the end of the run."""

from __future__ import annotations

import asyncio
import os
import secrets
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


@dataclass
class Postgres:
    """Creates throw-away databases on the machine's PostgreSQL."""

    prefix: str = field(default_factory=lambda: f"overnight_test_{secrets.token_hex(4)}")
    created: list[str] = field(default_factory=list)

    def new_database(self) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        asyncio.run(_admin([f'CREATE DATABASE "{name}"']))
        self.created.append(name)
        return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    def drop_all(self) -> None:
        asyncio.run(_admin([f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in self.created]))


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

    def settings(self) -> dict[str, Any]:
        """Settings for one new server on this backend."""
        if self.postgres is None or self.s3_endpoint is None:
            return {}
        return {
            "database_url": self.postgres.new_database(),
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
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite")
    return Backend(
        request.param,
        postgres=request.getfixturevalue("postgres"),
        s3_endpoint=request.getfixturevalue("s3_endpoint"),
    )
