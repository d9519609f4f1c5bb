"""Anthropic's Messages API over chat completions, both ways.

`to_chat(params)` turns a Messages request into a chat completions body;
`from_chat(answer, params)` turns the chat completion into a Message.
Every field of the request is carried, accepted as having no effect here,
or refused: a field chat completions cannot carry raises `Untranslatable`,
naming it, and the request fails on its own with an
`invalid_request_error` rather than run without it. docs/api-anthropic.md
has the table of every field; keep the two together.
"""

from __future__ import annotations

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
    json_object,
    json_text,
    new_id,
    refuse_unknown,
    token_count,
)

#: What each top-level field becomes; refused ones say why.
_REFUSED = {
    "container": "containers belong to Anthropic's code-execution tool.",
    "mcp_servers": "MCP servers are called by Anthropic's API, not by a model server.",
    "context_management": "context editing is done by Anthropic's API.",
    "output_format": "structured outputs are not translated; use a tool with a schema.",
    "output_config": "output settings are not translated.",
    "inference_geo": "there is one place of inference here.",
}
_CARRIED = (
    "model",
    "max_tokens",
    "messages",
    "system",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "metadata",
    "tools",
    "tool_choice",
    "stream",
    "thinking",
    "service_tier",
)
#: `cache_control` is a caching hint: the answer is the same without it.
_TEXT_BLOCK = ("type", "text", "cache_control", "citations")
_IMAGE_BLOCK = ("type", "source", "cache_control")
_TOOL_USE_BLOCK = ("type", "id", "name", "input", "cache_control")
_TOOL_RESULT_BLOCK = ("type", "tool_use_id", "content", "is_error", "cache_control")
_TOOL = ("type", "name", "description", "input_schema", "cache_control", "strict")

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# ------------------------------------------------------------------ request


def to_chat(params: dict[str, Any]) -> dict[str, Any]:
    """A chat completions body that asks what `params` asks; Untranslatable
    for the first field it cannot carry."""
    for name, why in _REFUSED.items():
        if params.get(name) is not None:
            raise Untranslatable(name, f"cannot be carried to chat completions: {why}")
    refuse_unknown(params, _CARRIED, "")
    chat: dict[str, Any] = {
        "model": a_string(params.get("model"), "model"),
        "max_tokens": _max_tokens(params.get("max_tokens")),
    }
    messages: list[dict[str, Any]] = []
    system = params.get("system")
    if system is not None:
        text = _text_content(system, "system")
        if text:
            messages.append({"role": "system", "content": text})
    for index, message in enumerate(a_list(params.get("messages"), "messages")):
        messages.extend(_message(an_object(message, f"messages[{index}]"), f"messages[{index}]"))
    chat["messages"] = messages

    if (stop := params.get("stop_sequences")) is not None:
        chat["stop"] = [
            a_string(s, f"stop_sequences[{i}]")
            for i, s in enumerate(a_list(stop, "stop_sequences"))
        ]
    for name in ("temperature", "top_p"):
        if (value := params.get(name)) is not None:
            chat[name] = a_number(value, name)
    if (top_k := params.get("top_k")) is not None:
        chat["top_k"] = an_integer(top_k, "top_k")
    if (metadata := params.get("metadata")) is not None:
        metadata = an_object(metadata, "metadata")
        refuse_unknown(metadata, ("user_id",), "metadata")
        if metadata.get("user_id") is not None:
            chat["user"] = a_string(metadata["user_id"], "metadata.user_id")
    if (tools := params.get("tools")) is not None:
        chat["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(a_list(tools, "tools"))]
    if (choice := params.get("tool_choice")) is not None:
        chat.update(_tool_choice(an_object(choice, "tool_choice")))
    if params.get("stream") not in (None, False):
        raise Untranslatable("stream", "batches do not stream; remove it.")
    _no_thinking(params.get("thinking"))
    if params.get("service_tier") not in (None, "auto", "standard_only"):
        raise Untranslatable("service_tier", "must be 'auto' or 'standard_only'.")
    return chat


def _max_tokens(value: Any) -> int:
    if value is None:
        raise Untranslatable("max_tokens", "is required.")
    tokens = an_integer(value, "max_tokens")
    if tokens < 1:
        raise Untranslatable("max_tokens", "must be at least 1.")
    return tokens


def _no_thinking(thinking: Any) -> None:
    if thinking is None:
        return
    if an_object(thinking, "thinking").get("type") != "disabled":
        raise Untranslatable("thinking", "extended thinking cannot be carried to chat completions.")


def _message(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """One Messages turn as one or more chat messages: a user turn's
    `tool_result` blocks become `tool` messages, ahead of its other
    content; an assistant turn's `tool_use` blocks become `tool_calls`."""
    refuse_unknown(message, ("role", "content"), where)
    role = message.get("role")
    content = message.get("content")
    if role not in ("user", "assistant"):
        raise Untranslatable(f"{where}.role", "must be 'user' or 'assistant'.")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = [
        an_object(b, f"{where}.content[{i}]")
        for i, b in enumerate(a_list(content, f"{where}.content"))
    ]
    if role == "assistant":
        return [_assistant(blocks, where)]
    return _user(blocks, where)


def _user(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        at = f"{where}.content[{index}]"
        kind = block.get("type")
        if kind == "text":
            parts.append(_text_part(block, at))
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            tool_messages.append(_tool_message(block, at))
        else:
            raise _block_refused(kind, at, "a user turn")
    if not parts:
        return tool_messages
    return [*tool_messages, {"role": "user", "content": _compact(parts)}]


def _assistant(blocks: list[dict[str, Any]], where: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        at = f"{where}.content[{index}]"
        kind = block.get("type")
        if kind == "text":
            parts.append(_text_part(block, at))
        elif kind == "tool_use":
            refuse_unknown(block, _TOOL_USE_BLOCK, at)
            calls.append(
                {
                    "id": a_string(block.get("id"), f"{at}.id"),
                    "type": "function",
                    "function": {
                        "name": a_string(block.get("name"), f"{at}.name"),
                        "arguments": json_text(an_object(block.get("input"), f"{at}.input")),
                    },
                }
            )
        else:
            raise _block_refused(kind, at, "an assistant turn")
    message: dict[str, Any] = {"role": "assistant", "content": _compact(parts) if parts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _block_refused(kind: Any, at: str, turn: str) -> Untranslatable:
    return Untranslatable(
        f"{at}.type", f"{kind!r} blocks in {turn} cannot be carried to chat completions."
    )


def _text_part(block: dict[str, Any], at: str) -> dict[str, Any]:
    refuse_unknown(block, _TEXT_BLOCK, at)
    if block.get("citations"):
        raise Untranslatable(f"{at}.citations", "citations cannot be carried to chat completions.")
    return {"type": "text", "text": a_string(block.get("text"), f"{at}.text")}


def _image_part(block: dict[str, Any], at: str) -> dict[str, Any]:
    refuse_unknown(block, _IMAGE_BLOCK, at)
    source = an_object(block.get("source"), f"{at}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = a_string(source.get("media_type"), f"{at}.source.media_type")
        data = a_string(source.get("data"), f"{at}.source.data")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = a_string(source.get("url"), f"{at}.source.url")
    else:
        raise Untranslatable(
            f"{at}.source.type", f"{kind!r} image sources cannot be carried (base64 and url can)."
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_message(block: dict[str, Any], at: str) -> dict[str, Any]:
    refuse_unknown(block, _TOOL_RESULT_BLOCK, at)
    if block.get("is_error"):
        raise Untranslatable(
            f"{at}.is_error",
            "chat completions' tool messages have no error flag; say so in the content instead.",
        )
    content = block.get("content")
    text: str | list[dict[str, Any]] = ""
    if content is not None:
        text = _text_content(content, f"{at}.content")
    return {
        "role": "tool",
        "tool_call_id": a_string(block.get("tool_use_id"), f"{at}.tool_use_id"),
        "content": text,
    }


def _text_content(value: Any, where: str) -> str | list[dict[str, Any]]:
    """`system` or a tool result's content: a string, or text blocks."""
    if isinstance(value, str):
        return value
    parts = []
    for index, block in enumerate(a_list(value, where)):
        at = f"{where}[{index}]"
        block = an_object(block, at)
        if block.get("type") != "text":
            raise Untranslatable(f"{at}.type", "only text blocks can be carried here.")
        parts.append(_text_part(block, at))
    return _compact(parts)


def _compact(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A lone text part as a plain string, which every server reads (some
    chat templates take only strings); anything else as parts."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _tool(tool: Any, at: str) -> dict[str, Any]:
    tool = an_object(tool, at)
    if tool.get("type") not in (None, "custom"):
        raise Untranslatable(
            f"{at}.type",
            f"{tool.get('type')!r} is one of Anthropic's own tools, run by its API; "
            "only custom tools can be carried.",
        )
    refuse_unknown(tool, _TOOL, at)
    function: dict[str, Any] = {
        "name": a_string(tool.get("name"), f"{at}.name"),
        "parameters": an_object(tool.get("input_schema"), f"{at}.input_schema"),
    }
    if tool.get("description") is not None:
        function["description"] = a_string(tool["description"], f"{at}.description")
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any]) -> dict[str, Any]:
    refuse_unknown(choice, ("type", "name", "disable_parallel_tool_use"), "tool_choice")
    kind = choice.get("type")
    chosen: Any
    if kind == "auto":
        chosen = "auto"
    elif kind == "any":
        chosen = "required"
    elif kind == "none":
        chosen = "none"
    elif kind == "tool":
        name = a_string(choice.get("name"), "tool_choice.name")
        chosen = {"type": "function", "function": {"name": name}}
    else:
        raise Untranslatable("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'.")
    carried: dict[str, Any] = {"tool_choice": chosen}
    if choice.get("disable_parallel_tool_use"):
        carried["parallel_tool_calls"] = False
    return carried


# ------------------------------------------------------------------- answer


def from_chat(answer: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The Message a Messages server would have answered, from the chat
    completion answered to `to_chat(params)`."""
    choice = first_choice(answer)
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    assert isinstance(message, dict)
    content: list[dict[str, Any]] = []
    if text := answer_text(message.get("content")):
        content.append({"type": "text", "text": text})
    for index, call in enumerate(message.get("tool_calls") or ()):
        content.append(_tool_use(call, f"choices[0].message.tool_calls[{index}]"))
    stop_reason, stop_sequence = _stop(
        choice, params, any(b["type"] == "tool_use" for b in content)
    )
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": params.get("model"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": token_count(usage, "prompt_tokens", "input_tokens"),
            "output_tokens": token_count(usage, "completion_tokens", "output_tokens"),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached_tokens(usage),
        },
    }


def _tool_use(call: Any, at: str) -> dict[str, Any]:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise Untranslatable(at, "the model's tool call has no function.")
    function = call["function"]
    call_id = call.get("id")
    return {
        "type": "tool_use",
        "id": call_id if isinstance(call_id, str) and call_id else new_id("toolu_"),
        "name": a_string(function.get("name"), f"{at}.function.name"),
        "input": json_object(function.get("arguments"), f"{at}.function.arguments"),
    }


def _stop(choice: dict[str, Any], params: dict[str, Any], called: bool) -> tuple[str, str | None]:
    """`stop_reason` and `stop_sequence`. Which stop sequence ended the
    text is known only when the server says so (vLLM and SGLang report it
    as the choice's `stop_reason`, as does overnight's embedded model)."""
    if called:
        return "tool_use", None
    finish = choice.get("finish_reason")
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str):
        sequences = params.get("stop_sequences") or ()
        if matched in sequences:
            return "stop_sequence", matched
    return _STOP_REASONS.get(finish if isinstance(finish, str) else "stop", "end_turn"), None


# ------------------------------------------------------------------- errors

#: The error type Anthropic's API gives each status.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int | None) -> str:
    """Anthropic's name for an error of this HTTP status."""
    if status is None or status >= 500:
        return _ERROR_TYPES.get(status or 500, "api_error")
    return _ERROR_TYPES.get(status, "invalid_request_error")


def error_body(status: int | None, message: str) -> dict[str, Any]:
    """An error answer in the Messages API's shape."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def error_message(body: Any) -> str:
    """The message of an error answer in either shape (Anthropic's, or the
    OpenAI-style one chat servers send), or a generic one."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:1000]
    return "The model server returned an error."


def upstream_error(status: int, body: Any) -> dict[str, Any]:
    """A chat server's error answer in the Messages API's shape."""
    if isinstance(body, dict) and body.get("type") == "error":
        return body
    return error_body(status, error_message(body))
