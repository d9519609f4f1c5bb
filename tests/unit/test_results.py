"""Result lines in each dialect's shape."""

from __future__ import annotations

import json

from overnight.domain.results import Outcome, render_openai, render_together


def parse(line: bytes) -> dict[str, object]:
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


def test_openai_success() -> None:
    row = parse(render_openai(Outcome("a", 200, {"x": 1}, "req_1")))
    assert row["custom_id"] == "a"
    assert str(row["id"]).startswith("batch_req_")
    assert row["response"] == {"status_code": 200, "request_id": "req_1", "body": {"x": 1}}
    assert row["error"] is None


def test_openai_upstream_error_keeps_status_and_body() -> None:
    row = parse(render_openai(Outcome("a", 429, {"error": {"message": "slow down"}}, "req_2")))
    assert row["response"] == {
        "status_code": 429,
        "request_id": "req_2",
        "body": {"error": {"message": "slow down"}},
    }
    assert row["error"] is None


def test_openai_never_ran() -> None:
    row = parse(render_openai(Outcome.never_ran("a", "batch_expired", "too late")))
    assert row["response"] is None
    assert row["error"] == {"code": "batch_expired", "message": "too late"}


def test_together_shapes() -> None:
    ok = parse(render_together(Outcome("a", 200, {"x": 1})))
    assert str(ok["id"]).startswith("br_")
    assert ok["response"] == {"status_code": 200, "body": {"x": 1}}
    failed = parse(render_together(Outcome.never_ran("b", "batch_cancelled", "stopped")))
    assert failed == {"custom_id": "b", "error": {"message": "stopped", "code": "batch_cancelled"}}
    upstream = parse(render_together(Outcome("c", 400, {"error": {"message": "bad"}})))
    assert upstream["error"] == {"message": "bad", "code": 400}
