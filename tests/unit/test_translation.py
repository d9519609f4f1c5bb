"""The translation of Messages and Responses requests to chat completions
and back (overnight/translate/): each row of docs/api-anthropic.md's
tables, and the refusals, which must name the field they refuse. The
backend that uses it is checked at the end, on a fake inner backend."""

from __future__ import annotations

import json
from typing import Any

import pytest

from overnight.backends.base import UpstreamRequest, UpstreamResult
from overnight.backends.translating import UNREADABLE_ANSWER, Translating
from overnight.translate import Untranslatable, messages, responses

BASE = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def chat_of(**params: Any) -> dict[str, Any]:
    return messages.to_chat({**BASE, **params})


def completion(message: dict[str, Any], finish: str = "stop", **choice: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "created": 1700000000,
        "model": "served-name",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 2},
        },
    }


# ------------------------------------------------------- Messages -> chat


def test_the_plain_fields_are_carried() -> None:
    chat = chat_of(
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        stop_sequences=["END"],
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        metadata={"user_id": "u-1"},
        stream=False,
        thinking={"type": "disabled"},
        service_tier="auto",
    )
    assert chat == {
        "model": "m",
        "max_tokens": 16,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
        "stop": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "user": "u-1",
    }


def test_text_and_image_blocks_become_parts() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]
    chat = chat_of(messages=[{"role": "user", "content": content}])
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        }
    ]


def test_tool_use_and_tool_result_blocks_become_tool_calls_and_tool_messages() -> None:
    turns = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Also, thanks."},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            ],
        },
    ]
    tools = [
        {
            "name": "weather",
            "description": "Today's weather.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    chat = chat_of(
        messages=turns,
        tools=tools,
        tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
    )
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        # The tool's result goes first: it must follow the call.
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "user", "content": "Also, thanks."},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": tools[0]["input_schema"],
                "description": "Today's weather.",
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")],
)
def test_tool_choice_names_map(choice: dict[str, Any], expected: str) -> None:
    assert chat_of(tool_choice=choice)["tool_choice"] == expected


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"container": "c-1"}, "container"),
        ({"mcp_servers": [{"name": "x"}]}, "mcp_servers"),
        ({"stream": True}, "stream"),
        ({"metadata": {"user_id": "u", "team": "x"}}, "metadata.team"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"frobnicate": 1}, "frobnicate"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": True}],
                    }
                ]
            },
            "messages[0].content[0].is_error",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}],
                    }
                ]
            },
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ]
            },
            "messages[0].content[0].source.type",
        ),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_a_field_that_cannot_be_carried_is_refused_by_name(
    params: dict[str, Any], param: str
) -> None:
    with pytest.raises(Untranslatable) as refused:
        chat_of(**params)
    assert refused.value.param == param
    assert str(refused.value).startswith(f"{param}: ")


# ------------------------------------------------------- chat -> Message


def test_a_completion_becomes_a_message() -> None:
    message = messages.from_chat(completion({"role": "assistant", "content": "Hello."}), BASE)
    assert message["id"].startswith("msg_") and len(message["id"]) == 28
    assert {k: v for k, v in message.items() if k != "id"} == {
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "Hello."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 7,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 2,
        },
    }


@pytest.mark.parametrize(
    ("finish", "extra", "expected"),
    [
        ("length", {}, ("max_tokens", None)),
        ("content_filter", {}, ("refusal", None)),
        ("stop", {"stop_reason": "END"}, ("stop_sequence", "END")),
        ("stop", {"stop_reason": "not asked for"}, ("end_turn", None)),
        ("stop", {"stop_reason": 2}, ("end_turn", None)),  # vLLM: an EOS token id
    ],
)
def test_the_finish_reason_becomes_a_stop_reason(
    finish: str, extra: dict[str, Any], expected: tuple[str, str | None]
) -> None:
    params = {**BASE, "stop_sequences": ["END"]}
    answer = completion({"role": "assistant", "content": "x"}, finish, **extra)
    message = messages.from_chat(answer, params)
    assert (message["stop_reason"], message["stop_sequence"]) == expected


def test_tool_calls_become_tool_use_blocks() -> None:
    call = {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    answer = completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    message = messages.from_chat(answer, BASE)
    assert message["content"] == [
        {"type": "tool_use", "id": "call_9", "name": "f", "input": {"a": 1}}
    ]
    assert message["stop_reason"] == "tool_use"


def test_tool_call_arguments_that_are_not_an_object_cannot_be_read_back() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    with pytest.raises(Untranslatable, match="arguments"):
        messages.from_chat(completion({"role": "assistant", "tool_calls": [call]}), BASE)


def test_upstream_errors_take_anthropic_types_by_status() -> None:
    openai_shaped = {"error": {"message": "slow down", "type": "rate_limit_error"}}
    assert messages.upstream_error(429, openai_shaped) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert messages.error_type(400) == "invalid_request_error"
    assert messages.error_type(404) == "not_found_error"
    assert messages.error_type(529) == "overloaded_error"
    assert messages.error_type(502) == "api_error"
    assert messages.error_type(None) == "api_error"
    native = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    assert messages.upstream_error(529, native) is native


# ------------------------------------------------------ Responses <-> chat


def test_a_responses_request_becomes_chat() -> None:
    params = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use metric units."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Weather?"},
                    {"type": "input_image", "image_url": "https://e.com/a.png", "detail": "low"},
                ],
            },
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "20C"},
        ],
        "max_output_tokens": 32,
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "metadata": {"k": "v"},
        "store": True,
        "safety_identifier": "u-2",
    }
    assert responses.to_chat(params) == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Use metric units."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://e.com/a.png", "detail": "low"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "20C"},
        ],
        "max_tokens": 32,
        "user": "u-2",
        "tools": [
            {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}},
        },
    }


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({"include": ["file_search_call.results"]}, "include"),
        ({"background": True}, "background"),
    ],
)
def test_a_responses_field_that_cannot_be_carried_is_refused_by_name(
    params: dict[str, Any], param: str
) -> None:
    with pytest.raises(Untranslatable) as refused:
        responses.to_chat({"model": "m", "input": "hi", **params})
    assert refused.value.param == param


def test_a_completion_becomes_a_response() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    answer = completion({"role": "assistant", "content": "Hi.", "tool_calls": [call]}, "length")
    params = {"model": "m", "input": "hi", "metadata": {"k": "v"}, "max_output_tokens": 3}
    response = responses.from_chat(answer, params)
    assert response["id"].startswith("resp_") and response["object"] == "response"
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["created_at"] == 1700000000
    assert (response["model"], response["metadata"]) == ("m", {"k": "v"})
    message, function_call = response["output"]
    assert message["content"] == [{"type": "output_text", "text": "Hi.", "annotations": []}]
    assert (message["type"], message["role"], message["status"]) == (
        "message",
        "assistant",
        "completed",
    )
    assert {k: function_call[k] for k in ("type", "call_id", "name", "arguments")} == {
        "type": "function_call",
        "call_id": "call_1",
        "name": "f",
        "arguments": "{}",
    }
    assert response["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 10,
    }


# ------------------------------------------------------- the backend


class Recorder:
    """An inner backend that answers a fixed result and keeps what it got."""

    def __init__(self, result: UpstreamResult) -> None:
        self.result = result
        self.sent: list[UpstreamRequest] = []

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def send(self, request: UpstreamRequest) -> UpstreamResult:
        self.sent.append(request)
        return self.result


def translating(
    result: UpstreamResult, apis: tuple[str, ...] = ("chat",)
) -> tuple[Translating, Recorder]:
    inner = Recorder(result)
    return Translating(inner, model="m", apis=frozenset(apis)), inner


async def test_a_shape_the_server_speaks_passes_through_untouched() -> None:
    native = UpstreamResult(200, {"type": "message"})
    backend, inner = translating(native, ("chat", "messages"))
    request = UpstreamRequest("/v1/messages", {**BASE, "x_vendor": 1})
    assert await backend.send(request) is native
    assert inner.sent == [request]


async def test_a_shape_it_does_not_speak_goes_as_chat_and_comes_back_as_its_own() -> None:
    backend, inner = translating(UpstreamResult(200, completion({"content": "ok"})))
    result = await backend.send(UpstreamRequest("/v1/messages", BASE))
    assert inner.sent[0].endpoint == "/v1/chat/completions"
    assert result.status_code == 200 and result.body["content"] == [{"type": "text", "text": "ok"}]


async def test_an_untranslatable_request_fails_at_once_with_nothing_sent() -> None:
    backend, inner = translating(UpstreamResult(200, completion({"content": "ok"})))
    result = await backend.send(UpstreamRequest("/v1/messages", {**BASE, "container": "c"}))
    assert inner.sent == []
    assert result.status_code == 400 and not result.congested
    error = result.body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("container: ") and "'m'" in error["message"]


async def test_an_answer_that_cannot_be_read_back_fails_without_a_retry() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
    backend, _ = translating(UpstreamResult(200, completion({"tool_calls": [call]})))
    result = await backend.send(UpstreamRequest("/v1/messages", BASE))
    assert result.status_code == UNREADABLE_ANSWER and not result.congested
    assert result.body["error"]["type"] == "api_error"


async def test_an_upstream_error_keeps_its_status_in_the_shape_of_the_request() -> None:
    failed = UpstreamResult(503, {"error": {"message": "overloaded"}}, retry_after=2.0)
    backend, _ = translating(failed)
    result = await backend.send(UpstreamRequest("/v1/messages", BASE))
    assert (result.status_code, result.retry_after, result.congested) == (503, 2.0, True)
    assert result.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "overloaded"},
    }
    result = await translating(failed)[0].send(
        UpstreamRequest("/v1/responses", {"model": "m", "input": "hi"})
    )
    assert result.body == failed.body


def test_arguments_keep_big_integers_exactly() -> None:
    turn = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"n": 2**70}}],
    }
    chat = chat_of(messages=[turn])
    assert json.loads(chat["messages"][0]["tool_calls"][0]["function"]["arguments"]) == {"n": 2**70}
