"""Checking one input line."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overnight.domain.lines import (
    LineError,
    LineRules,
    Request,
    Unreadable,
    check_fields,
    check_line,
    read_requests,
)

from .strategies import json_values

RULES = LineRules("/v1/chat/completions", models={"m"})


def line(**overrides: Any) -> bytes:
    value: dict[str, Any] = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": []},
    }
    value.update(overrides)
    return json.dumps({k: v for k, v in value.items() if v is not ...}).encode()


def test_a_valid_line() -> None:
    checked = check_line(line(), 1, RULES)
    assert checked == Request("a", "m", {"model": "m", "messages": []})


@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        (b"{", "invalid_json_line", None),
        (b"\xff\xfe{}", "invalid_json_line", None),
        (b"[1]", "invalid_json_line", None),
        (b"42", "invalid_json_line", None),
        (line(custom_id=...), "missing_required_parameter", "custom_id"),
        (line(custom_id=7), "invalid_request", "custom_id"),
        (line(custom_id=""), "invalid_request", "custom_id"),
        (line(custom_id="x" * 513), "custom_id_too_long", "custom_id"),
        (line(method=...), "missing_required_parameter", "method"),
        (line(method="GET"), "invalid_method", "method"),
        (line(url=...), "missing_required_parameter", "url"),
        (line(url="/v1/embeddings"), "invalid_url", "url"),
        (line(body=...), "missing_required_parameter", "body"),
        (line(body=[1]), "invalid_request", "body"),
        (line(body={"messages": []}), "missing_required_parameter", "body.model"),
        (line(body={"model": 3}), "invalid_request", "body.model"),
        (line(body={"model": "other"}), "model_not_found", "body.model"),
        (line(body={"model": "m", "stream": True}), "streaming_unsupported", "body.stream"),
    ],
)
def test_each_problem_has_its_code_and_param(raw: bytes, code: str, param: str | None) -> None:
    checked = check_line(raw, 7, RULES)
    assert isinstance(checked, LineError)
    assert (checked.code, checked.param, checked.line) == (code, param, 7)
    assert "7" in checked.message


def test_crlf_line_ends_are_accepted() -> None:
    assert isinstance(check_line(line() + b"\r", 1, RULES), Request)


def test_together_lines_may_omit_method_and_url() -> None:
    rules = LineRules("/v1/chat/completions", models={"m"}, require_method_and_url=False)
    assert isinstance(check_line(line(method=..., url=...), 1, rules), Request)
    assert isinstance(check_line(line(url="/v1/completions"), 1, rules), LineError)


def test_stream_false_is_fine() -> None:
    assert isinstance(check_line(line(body={"model": "m", "stream": False}), 1, RULES), Request)


@given(st.binary(max_size=200), st.integers(min_value=1, max_value=10**9))
def test_the_checker_never_raises(raw: bytes, number: int) -> None:
    result = check_line(raw, number, RULES)
    assert isinstance(result, Request | LineError)
    if isinstance(result, LineError):
        assert result.line == number


@given(
    extra=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in {"custom_id", "method", "url", "body"}),
        json_values,
        max_size=4,
    ),
    body_extra=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in {"model", "stream"}), json_values, max_size=4
    ),
    order=st.permutations(["custom_id", "method", "url", "body"]),
)
def test_valid_lines_pass_whatever_their_key_order_and_extra_fields(
    extra: dict[str, Any], body_extra: dict[str, Any], order: list[str]
) -> None:
    base = {
        "custom_id": "id-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {**body_extra, "model": "m"},
    }
    value = {key: base[key] for key in order} | extra
    checked = check_line(json.dumps(value).encode(), 3, RULES)
    assert isinstance(checked, Request)
    assert checked.custom_id == "id-1"


def with_body_value(fragment: bytes) -> bytes:
    """A valid line but for `fragment`, raw JSON text in a body field."""
    return line()[:-2] + b', "x": ' + fragment + b"}}"


@pytest.mark.parametrize(
    ("fragment", "reason"),
    [
        (b"1e400", "number out of range"),
        (b"-1e309", "number out of range"),
        (b"9" * 5000, "integer value out of range"),
        (b'"\xff\xfe"', "invalid UTF-8"),
        (b'"caf\xc3"', "invalid UTF-8"),
        (b'"\\ud800"', "invalid JSON"),
        (b"[" * 127 + b"]" * 127, "nests arrays or objects more than 128 levels"),
        (b"[" * 1000 + b"]" * 1000, "nests arrays or objects more than 128 levels"),
        (b"[" * 100_000 + b"]" * 100_000, "nests arrays or objects more than 128 levels"),
    ],
)
def test_a_body_value_that_cannot_be_sent_makes_the_line_invalid_and_says_why(
    fragment: bytes, reason: str
) -> None:
    checked = check_line(with_body_value(fragment), 2, RULES)
    assert isinstance(checked, LineError)
    assert checked.code == "invalid_json_line"
    assert checked.line == 2
    assert reason in checked.message and "Line 2" in checked.message


@pytest.mark.parametrize(
    "fragment",
    [
        b"[" * 126 + b"]" * 126,  # 128 levels with the line and the body
        b'"' + b"[" * 5000 + b'"',  # brackets inside a string are text
        b'"\\"[[[[' + b"{" * 300 + b'"',
        b"18446744073709551616",
        b"1e-400",
    ],
)
def test_unusual_but_valid_body_values_pass(fragment: bytes) -> None:
    assert isinstance(check_line(with_body_value(fragment), 2, RULES), Request)


def test_the_nesting_limit_does_not_depend_on_the_callers_stack() -> None:
    raw = with_body_value(b"[" * 126 + b"]" * 126)

    def nested(depth: int) -> Request | LineError:
        return nested(depth - 1) if depth else check_line(raw, 2, RULES)

    for depth in (0, 200, 500):
        assert isinstance(nested(depth), Request), depth


def test_a_line_read_back_that_fails_the_rule_is_returned_not_dropped() -> None:
    raws = [line(custom_id="a"), b"", with_body_value(b"1e400").replace(b'"a"', b'"b"')]
    read = list(read_requests(raws, 10, RULES))
    assert isinstance(read[0], Request)
    assert isinstance(read[1], Unreadable)
    assert read[1].custom_id == "b"
    assert read[1].error.line == 12
    assert list(read_requests([b"{oops"], 3, RULES)) == [
        Unreadable(
            "line-3", LineError("invalid_json_line", "Line 3 is not valid JSON (invalid JSON).", 3)
        )
    ]


maybe = st.one_of(st.none(), st.just(...), json_values)


@given(
    custom_id=st.one_of(maybe, st.sampled_from(["a", "", "x" * 513])),
    method=st.one_of(maybe, st.sampled_from(["POST", "GET"])),
    url=st.one_of(maybe, st.sampled_from(["/v1/chat/completions", "/v1/embeddings"])),
    body=st.one_of(
        maybe,
        st.fixed_dictionaries(
            {"model": st.one_of(maybe, st.sampled_from(["m", "other", ""]))},
            optional={"stream": st.one_of(st.booleans(), json_values), "x": json_values},
        ),
    ),
    rules=st.sampled_from(
        [RULES, LineRules("/v1/chat/completions", models=None, require_method_and_url=False)]
    ),
)
def test_the_fast_path_accepts_exactly_what_the_precise_checks_accept(
    custom_id: Any, method: Any, url: Any, body: Any, rules: LineRules
) -> None:
    """`check_line` passes a valid line in one inline expression and sends
    everything else to `check_fields`; the two must agree on every line."""
    fields = {"custom_id": custom_id, "method": method, "url": url, "body": body}
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if v is not ...}
        fields["body"] = body
    raw = json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()
    present = {k: (None if v is ... else v) for k, v in fields.items()}
    assert check_line(raw, 4, rules) == check_fields(**present, line=4, rules=rules)


def test_re_reading_accepts_every_line_any_configuration_validated() -> None:
    """A deployment may allow `custom_id`s up to 65,536 characters; a line
    its validation accepted must not fail when a chunk is re-read to run."""
    configured = LineRules("/v1/chat/completions", models={"m"}, max_custom_id_length=65536)
    raw = line(custom_id="x" * 65536, method=..., url=...)
    together = LineRules(
        "/v1/chat/completions",
        models={"m"},
        require_method_and_url=False,
        max_custom_id_length=65536,
    )
    assert isinstance(check_line(line(custom_id="x" * 65536), 3, configured), Request)
    assert isinstance(check_line(raw, 3, together), Request)
    reread = list(
        read_requests(
            [line(custom_id="x" * 65536), raw], 3, LineRules.rereading("/v1/chat/completions")
        )
    )
    assert [type(r) for r in reread] == [Request, Request]
