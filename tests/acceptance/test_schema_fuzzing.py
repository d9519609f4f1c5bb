"""schemathesis against the server's own OpenAPI schema (/openapi.json):
generated requests for every operation, valid and invalid, sent to the app
in-process (tests/inprocess.py, through a `requests` session that reaches
it over ASGI), with its worker, on both storage backends: what PostgreSQL
refuses and SQLite takes (a NUL byte, a 64-bit overflow) must not become a
500 either. Every answer must be below 500 and must match the
schema: a documented status code, a documented content type, a body that
validates against the documented model, the documented headers.

The caller is an admin key acting for one tenant (`x-overnight-tenant`), so
that both the dialects and the admin API are reachable past authentication.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from overnight.testing.fake_upstream import FakeUpstream

from backends import Backend
from helpers import fake_model
from inprocess import BASE_URL, BackgroundApi, api_settings

ADMIN = "key-fuzz-admin"
HEADERS = {"Authorization": f"Bearer {ADMIN}", "x-overnight-tenant": "fuzz"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Generated cases per operation and backend (schemathesis adds its own
#: coverage cases): with about 30 operations, several hundred per backend.
EXAMPLES_PER_OPERATION = 5
MINIMUM_CASES = 300

#: (backend, operation, status) of every case sent.
sent: list[tuple[str, str, int]] = []


class Tracebacks(logging.Handler):
    """Every log record that carries an exception: what a server's log
    would show as a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def tracebacks() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="module")
def fuzzed(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: FakeUpstream,
    backend: Backend,
    tracebacks: Tracebacks,
) -> Iterator[BackgroundApi]:
    settings = api_settings(
        tmp_path_factory.mktemp("fuzz") / "data",
        worker=True,
        models=[fake_model(upstream.url)],
        tenants=[{"name": "fuzz", "api_keys": ["key-fuzz"]}],
        admin_api_key_hashes=[hashlib.sha256(ADMIN.encode()).hexdigest()],
        max_upload_bytes=1024 * 1024,
        # In-process, cases come faster than the per-key limit allows; they
        # are to reach the routes (limits: test_rate_limits.py).
        rate_limit_per_second=0,
        **backend.settings(),
    )
    with BackgroundApi(settings) as app:
        yield app


def app_schema() -> dict[str, Any]:
    """The schema the server serves, built in-process at collection time
    (the routes alone; nothing is opened). `test_the_served_schema_is_this`
    checks that the app serves exactly this."""
    from overnight.api.app import create_app
    from overnight.settings import Settings

    return create_app(Settings()).openapi()


schema = schemathesis.openapi.from_dict(app_schema())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_every_answer_is_below_500_and_matches_the_schema(
    case: Any, fuzzed: BackgroundApi, backend: Backend
) -> None:
    session = fuzzed.requests_session()
    response = case.call(base_url=BASE_URL, session=session, headers=HEADERS, timeout=30)
    sent.append((backend.name, case.operation.label, response.status_code))
    case.validate_response(response, checks=CHECKS, headers=HEADERS)


def test_the_served_schema_is_this(fuzzed: BackgroundApi) -> None:
    assert fuzzed.client().get("/openapi.json").json() == app_schema()


def test_enough_cases_ran(fuzzed: BackgroundApi, backend: Backend, tracebacks: Tracebacks) -> None:
    """Runs after the generated tests of its backend (pytest keeps the
    file's order within a module's parameter)."""
    mine = [(operation, status) for name, operation, status in sent if name == backend.name]
    operations = {operation for operation, _ in mine}
    statuses = sorted({status for _, status in mine})
    print(f"schemathesis on {backend.name}: {len(mine)} cases over {len(operations)} operations,")
    print(f"statuses {statuses}")
    assert len(mine) >= MINIMUM_CASES
    assert len(operations) >= 30
    assert all(status < 500 for _, status in mine)
    assert tracebacks.records == []
