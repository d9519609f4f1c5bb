"""OpenAI's Responses API over chat completions, both ways.

`to_chat(params)` turns a Responses request into a chat completions body;
`from_chat(answer, params)` turns the chat completion into a Response
object with `output` items and `usage`. As for Messages, every field is
carried, accepted as having no effect here, or refused with
`Untranslatable` naming it (docs/api-anthropic.md has the table).
"""

from __future__ import annotations

import time
from typing import Any

from overnight.translate._shared import (
    Untranslatable,
    a_list,
    a_number,
    a_string,
    an_integer,
    an_object,
    answer_text,
    cached_tokens,
    first_choice,
    json_text,
    new_id,
    refuse_unknown,
    token_count,
)

_REFUSED = {
    "background": "a batch is already in the background.",
    "conversation": "conversations are kept by OpenAI's API.",
    "previous_response_id": "responses are not stored to continue from; send the whole input.",
    "prompt": "prompt templates are kept by OpenAI's API.",
    "max_tool_calls": "built-in tools are not carried.",
    "top_logprobs": "log probabilities are not translated.",
    "stream_options": "batches do not stream.",
}
_CARRIED = (
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "user",
    "safety_identifier",
    "metadata",
    "store",
    "prompt_cache_key",
    "service_tier",
    "truncation",
    "stream",
    "include",
    "reasoning",
)
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_MESSAGE = ("type", "role", "content", "id", "status")
_FUNCTION_CALL = ("type", "call_id", "name", "arguments", "id", "status")
_FUNCTION_OUTPUT = ("type", "call_id", "output", "id", "status")
_FUNCTION_TOOL = ("type", "name", "description", "parameters", "strict")


# ------------------------------------------------------------------ request


def to_chat(params: dict[str, Any]) -> dict[str, Any]:
    for name, why in _REFUSED.items():
        if params.get(name) not in (None, False):
            raise Untranslatable(name, f"cannot be carried to chat completions: {why}")
    refuse_unknown(params, _CARRIED, "")
    _accepted_as_is(params)
    chat: dict[str, Any] = {"model": a_string(params.get("model"), "model")}
    messages: list[dict[str, Any]] = []
    if (instructions := params.get("instructions")) is not None:
        messages.append({"role": "system", "content": a_string(instructions, "instructions")})
    messages.extend(_input(params.get("input")))
    chat["messages"] = messages
    if (tokens := params.get("max_output_tokens")) is not None:
        chat["max_tokens"] = an_integer(tokens, "max_output_tokens")
    for name in ("temperature", "top_p"):
        if (value := params.get(name)) is not None:
            chat[name] = a_number(value, name)
    user = params.get("user") or params.get("safety_identifier")
    if user is not None:
        chat["user"] = a_string(user, "user")
    if (tools := params.get("tools")) is not None:
        chat["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(a_list(tools, "tools"))]
    if (choice := params.get("tool_choice")) is not None:
        chat["tool_choice"] = _tool_choice(choice)
    if (parallel := params.get("parallel_tool_calls")) is not None:
        chat["parallel_tool_calls"] = parallel
    if (text := params.get("text")) is not None:
        chat.update(_text_format(an_object(text, "text")))
    return chat


def _accepted_as_is(params: dict[str, Any]) -> None:
    """Fields that change nothing here, in the values that mean so."""
    if params.get("stream") not in (None, False):
        raise Untranslatable("stream", "batches do not stream; remove it.")
    if params.get("include"):
        raise Untranslatable("include", "no extra output can be included.")
    if params.get("reasoning") not in (None, {}):
        raise Untranslatable("reasoning", "reasoning settings cannot be carried.")
    if params.get("truncation") not in (None, "disabled"):
        raise Untranslatable("truncation", "only 'disabled' can be carried.")
    if params.get("service_tier") not in (None, "auto", "default"):
        raise Untranslatable("service_tier", "there is one tier here: 'auto' or 'default'.")


def _input(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(a_list(value, "input")):
        at = f"input[{index}]"
        item = an_object(item, at)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, at))
        elif kind == "function_call":
            refuse_unknown(item, _FUNCTION_CALL, at)
            call = {
                "id": a_string(item.get("call_id"), f"{at}.call_id"),
                "type": "function",
                "function": {
                    "name": a_string(item.get("name"), f"{at}.name"),
                    "arguments": a_string(item.get("arguments"), f"{at}.arguments"),
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            refuse_unknown(item, _FUNCTION_OUTPUT, at)
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": a_string(item.get("call_id"), f"{at}.call_id"),
                    "content": _output_text(item.get("output"), f"{at}.output"),
                }
            )
        else:
            raise Untranslatable(
                f"{at}.type", f"{kind!r} items cannot be carried to chat completions."
            )
    return messages


def _message(item: dict[str, Any], at: str) -> dict[str, Any]:
    refuse_unknown(item, _MESSAGE, at)
    role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise Untranslatable(f"{at}.role", "must be 'user', 'assistant', 'system' or 'developer'.")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    parts = [
        _part(an_object(p, f"{at}.content[{i}]"), f"{at}.content[{i}]")
        for i, p in enumerate(a_list(content, f"{at}.content"))
    ]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": role, "content": parts[0]["text"]}
    return {"role": role, "content": parts}


def _part(part: dict[str, Any], at: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        refuse_unknown(part, ("type", "text", "annotations", "logprobs"), at)
        if part.get("annotations"):
            raise Untranslatable(f"{at}.annotations", "annotations cannot be carried.")
        return {"type": "text", "text": a_string(part.get("text"), f"{at}.text")}
    if kind == "input_image":
        refuse_unknown(part, ("type", "image_url", "detail", "file_id"), at)
        if part.get("file_id") is not None:
            raise Untranslatable(f"{at}.file_id", "images by file id cannot be carried; use a URL.")
        image: dict[str, Any] = {"url": a_string(part.get("image_url"), f"{at}.image_url")}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise Untranslatable(f"{at}.type", f"{kind!r} content cannot be carried to chat completions.")


def _output_text(value: Any, at: str) -> str:
    if isinstance(value, str):
        return value
    texts = []
    for index, part in enumerate(a_list(value, at)):
        part = an_object(part, f"{at}[{index}]")
        if part.get("type") not in ("input_text", "output_text"):
            raise Untranslatable(f"{at}[{index}].type", "only text can be a function's output.")
        texts.append(a_string(part.get("text"), f"{at}[{index}].text"))
    return "".join(texts)


def _tool(tool: Any, at: str) -> dict[str, Any]:
    tool = an_object(tool, at)
    if tool.get("type") != "function":
        raise Untranslatable(
            f"{at}.type",
            f"{tool.get('type')!r} is one of OpenAI's built-in tools; only functions can be carried.",
        )
    refuse_unknown(tool, _FUNCTION_TOOL, at)
    function: dict[str, Any] = {"name": a_string(tool.get("name"), f"{at}.name")}
    for name in ("description", "parameters", "strict"):
        if tool.get(name) is not None:
            function[name] = tool[name]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    choice = an_object(choice, "tool_choice")
    if choice.get("type") != "function":
        raise Untranslatable("tool_choice.type", "only a function can be chosen.")
    refuse_unknown(choice, ("type", "name"), "tool_choice")
    return {
        "type": "function",
        "function": {"name": a_string(choice.get("name"), "tool_choice.name")},
    }


def _text_format(text: dict[str, Any]) -> dict[str, Any]:
    refuse_unknown(text, ("format", "verbosity"), "text")
    if text.get("verbosity") not in (None, "medium"):
        raise Untranslatable("text.verbosity", "verbosity cannot be carried.")
    form = text.get("format")
    if form is None:
        return {}
    form = an_object(form, "text.format")
    kind = form.get("type")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if kind == "json_schema":
        refuse_unknown(form, ("type", "name", "schema", "strict", "description"), "text.format")
        schema = {k: form[k] for k in ("name", "schema", "strict", "description") if k in form}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    raise Untranslatable("text.format.type", "must be 'text', 'json_object' or 'json_schema'.")


# ------------------------------------------------------------------- answer


def from_chat(answer: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The Response object a Responses server would have answered."""
    choice = first_choice(answer)
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    assert isinstance(message, dict)
    output: list[dict[str, Any]] = []
    if text := answer_text(message.get("content")):
        output.append(
            {
                "type": "message",
                "id": new_id("msg_"),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for index, call in enumerate(message.get("tool_calls") or ()):
        output.append(_function_call(call, f"choices[0].message.tool_calls[{index}]"))
    finish = choice.get("finish_reason")
    incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(
        finish if isinstance(finish, str) else ""
    )
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    input_tokens = token_count(usage, "prompt_tokens")
    output_tokens = token_count(usage, "completion_tokens")
    details = usage.get("completion_tokens_details")
    reasoning = token_count(details, "reasoning_tokens") if isinstance(details, dict) else 0
    created = answer.get("created")
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": created if isinstance(created, int) else int(time.time()),
        "status": "incomplete" if incomplete else "completed",
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": params.get("model"),
        "output": output,
        "instructions": params.get("instructions"),
        "max_output_tokens": params.get("max_output_tokens"),
        "metadata": params.get("metadata") or {},
        "parallel_tool_calls": params.get("parallel_tool_calls", True),
        "temperature": params.get("temperature"),
        "top_p": params.get("top_p"),
        "tool_choice": params.get("tool_choice", "auto"),
        "tools": params.get("tools") or [],
        "text": params.get("text") or {"format": {"type": "text"}},
        "truncation": "disabled",
        "store": False,
        "user": params.get("user"),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens(usage)},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def _function_call(call: Any, at: str) -> dict[str, Any]:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise Untranslatable(at, "the model's tool call has no function.")
    function = call["function"]
    arguments = function.get("arguments")
    call_id = call.get("id")
    return {
        "type": "function_call",
        "id": new_id("fc_"),
        "call_id": call_id if isinstance(call_id, str) and call_id else new_id("call_"),
        "name": a_string(function.get("name"), f"{at}.function.name"),
        "arguments": arguments if isinstance(arguments, str) else json_text(arguments or {}),
        "status": "completed",
    }


def error_body(status: int | None, message: str) -> dict[str, Any]:
    """An error answer in OpenAI's shape."""
    kind = "invalid_request_error" if status is not None and status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def upstream_error(status: int, body: Any) -> Any:
    """A chat server's error is already in OpenAI's shape."""
    return body
