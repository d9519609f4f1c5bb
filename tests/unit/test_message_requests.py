"""One request of a Message Batch create: checked as it streams, named by
its place in the body when it is refused, and written as a line the one
line rule (`check_line`) takes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from overnight.domain.lines import LineRules, Request, check_line
from overnight.domain.message_requests import ENDPOINT, BadRequest, RequestChecker

PARAMS = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def checker() -> RequestChecker:
    return RequestChecker(models={"m"}, max_line_bytes=4096)


def test_a_request_becomes_a_line_of_the_core_format() -> None:
    params = {**PARAMS, "temperature": Decimal("0.1"), "x_vendor": {"n": 2**70}}
    line = checker().check({"custom_id": "a-1_Z", "params": params})
    assert line.endswith(b"\n")
    assert json.loads(line) == {
        "custom_id": "a-1_Z",
        "method": "POST",
        "url": ENDPOINT,
        "body": {**PARAMS, "temperature": 0.1, "x_vendor": {"n": 2**70}},
    }
    # Numbers are written as they were sent, not rounded through a float.
    assert b'"temperature":0.1' in line
    checked = check_line(line[:-1], 1, LineRules(ENDPOINT, models={"m"}))
    assert isinstance(checked, Request) and checked.custom_id == "a-1_Z"


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ("not an object", "requests[1]"),
        ({"custom_id": "b", "params": PARAMS, "extra": 1}, "requests[1].extra"),
        ({"params": PARAMS}, "requests[1].custom_id"),
        ({"custom_id": "has space", "params": PARAMS}, "requests[1].custom_id"),
        ({"custom_id": "x" * 65, "params": PARAMS}, "requests[1].custom_id"),
        ({"custom_id": 7, "params": PARAMS}, "requests[1].custom_id"),
        ({"custom_id": "a", "params": PARAMS}, "requests[1].custom_id"),  # a repeat
        ({"custom_id": "b"}, "requests[1].params"),
        ({"custom_id": "b", "params": [1]}, "requests[1].params"),
        (
            {"custom_id": "b", "params": {**PARAMS, "max_tokens": None}},
            "requests[1].params.max_tokens",
        ),
        (
            {"custom_id": "b", "params": {"model": "m", "messages": PARAMS["messages"]}},
            "requests[1].params.max_tokens",
        ),
        (
            {"custom_id": "b", "params": {**PARAMS, "max_tokens": "8"}},
            "requests[1].params.max_tokens",
        ),
        (
            {"custom_id": "b", "params": {**PARAMS, "max_tokens": 0}},
            "requests[1].params.max_tokens",
        ),
        ({"custom_id": "b", "params": {**PARAMS, "model": "other"}}, "requests[1].params.model"),
        ({"custom_id": "b", "params": {**PARAMS, "messages": []}}, "requests[1].params.messages"),
        (
            {
                "custom_id": "b",
                "params": {**PARAMS, "messages": [{"role": "tool", "content": "x"}]},
            },
            "requests[1].params.messages[0].role",
        ),
        (
            {"custom_id": "b", "params": {**PARAMS, "temperature": 3}},
            "requests[1].params.temperature",
        ),
        ({"custom_id": "b", "params": {**PARAMS, "stream": True}}, "requests[1].params.stream"),
        ({"custom_id": "b", "params": {**PARAMS, "system": 5}}, "requests[1].params.system"),
        (
            {"custom_id": "b", "params": {**PARAMS, "tool_choice": {"type": "sometimes"}}},
            "requests[1].params.tool_choice.type",
        ),
        ({"custom_id": "b", "params": {**PARAMS, "x": "\ud800"}}, "requests[1]"),
        ({"custom_id": "b", "params": {**PARAMS, "x": [[[[[[[[1]]]]]]]] * 1}}, None),
    ],
)
def test_a_bad_request_is_refused_naming_where(item: Any, param: str | None) -> None:
    requests = checker()
    requests.check({"custom_id": "a", "params": PARAMS})
    if param is None:  # a control: nesting well within the bound passes
        requests.check(item)
        return
    with pytest.raises(BadRequest) as refused:
        requests.check(item)
    assert refused.value.param == param
    assert str(refused.value).startswith(param)
    assert requests.count == 1


def test_nesting_past_the_line_rule_is_refused() -> None:
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    with pytest.raises(BadRequest, match="nests") as refused:
        checker().check({"custom_id": "a", "params": {**PARAMS, "x": deep}})
    assert refused.value.param == "requests[0]"


def test_a_request_longer_than_a_line_may_be_is_refused() -> None:
    with pytest.raises(BadRequest, match="longer than") as refused:
        checker().check({"custom_id": "a", "params": {**PARAMS, "x": "y" * 5000}})
    assert refused.value.param == "requests[0]"


def test_the_settings_validation_applies_are_applied_at_create() -> None:
    """So that a batch whose create passed never fails validation."""
    short = RequestChecker(models={"m", "n"}, max_line_bytes=4096, max_custom_id_length=3)
    with pytest.raises(BadRequest, match="longer than 3") as refused:
        short.check({"custom_id": "abcd", "params": PARAMS})
    assert refused.value.param == "requests[0].custom_id"

    single = RequestChecker(models={"m", "n"}, max_line_bytes=4096, single_model=True)
    single.check({"custom_id": "a", "params": PARAMS})
    with pytest.raises(BadRequest, match="same model") as refused:
        single.check({"custom_id": "b", "params": {**PARAMS, "model": "n"}})
    assert refused.value.param == "requests[1].params.model"
