"""What both translations need: the refusal, and small readers of request
values that name the field they refuse."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

import msgspec

CHAT_ENDPOINT = "/v1/chat/completions"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class Untranslatable(ValueError):
    """A request field chat completions cannot carry (or an answer that
    cannot be read back). `param` names where, as a path into the request
    (`messages[2].content[0].type`); the request fails with this message
    instead of running without the field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


def refuse_unknown(value: dict[str, Any], known: Iterable[str], where: str) -> None:
    """Refuse any key of `value` not in `known`: a field this translation
    does not know is a field it would drop. A null asks for nothing, so it
    passes (the SDKs send back blocks they parsed with every optional
    field, null)."""
    for key, item in value.items():
        if key not in known and item is not None:
            raise Untranslatable(
                _join(where, key), "this field has no counterpart in chat completions."
            )


def an_object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Untranslatable(param, "must be an object.")
    return value


def a_list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise Untranslatable(param, "must be an array.")
    return value


def a_string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise Untranslatable(param, "must be a string.")
    return value


def an_integer(value: Any, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Untranslatable(param, "must be an integer.")
    return value


def a_number(value: Any, param: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Untranslatable(param, "must be a number.")
    return value


def json_text(value: Any) -> str:
    """A tool call's arguments as chat completions carry them: JSON text."""
    return _encode(value).decode()


def json_object(text: Any, param: str) -> dict[str, Any]:
    """A tool call's arguments read back: they must be a JSON object."""
    if isinstance(text, dict):
        return text
    try:
        value = _decode(text) if isinstance(text, str | bytes) else None
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise Untranslatable(param, "the model's tool call arguments are not a JSON object.")
    return value


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def first_choice(answer: Any) -> dict[str, Any]:
    """The one choice of a chat completion; Untranslatable if there is none."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise Untranslatable("choices", "the chat completion holds no choice to translate.")
    return choices[0]


def answer_text(content: Any) -> str:
    """An assistant message's content: a string, or text parts (some
    servers answer with parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def token_count(usage: dict[str, Any], *names: str) -> int:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def cached_tokens(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details")
    return token_count(details, "cached_tokens") if isinstance(details, dict) else 0


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
