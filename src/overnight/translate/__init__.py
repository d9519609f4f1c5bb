"""Request shapes a model server may not speak, carried over chat
completions: Anthropic's Messages (`/v1/messages`) and OpenAI's Responses
(`/v1/responses`). The one place a request shape is translated: pure code,
below the backends that call it and the renderers that name its errors.

A model's `apis` setting says which shapes its server speaks; a request in
a shape it does not speak goes through `translator_for(endpoint)`: to chat
completions on the way out, and back into its own shape on the way in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from overnight.translate import messages, responses
from overnight.translate._shared import CHAT_ENDPOINT, Untranslatable


@dataclass(frozen=True, slots=True)
class Translator:
    """One request shape and its way to and from chat completions."""

    #: The name a model's `apis` setting gives the shape.
    api: str
    #: The request, as a chat completions body; Untranslatable if it cannot be.
    to_chat: Callable[[dict[str, Any]], dict[str, Any]]
    #: The chat completion, as this shape's answer to the original request.
    from_chat: Callable[[Any, dict[str, Any]], dict[str, Any]]
    #: An error answer of this shape, for a status and a message.
    error_body: Callable[[int | None, str], Any]
    #: A chat server's error answer, in this shape.
    upstream_error: Callable[[int, Any], Any]


MESSAGES = Translator(
    "messages",
    messages.to_chat,
    messages.from_chat,
    messages.error_body,
    messages.upstream_error,
)
RESPONSES = Translator(
    "responses",
    responses.to_chat,
    responses.from_chat,
    responses.error_body,
    responses.upstream_error,
)

#: Every endpoint whose shape is translated, and the API name of each.
TRANSLATED = {"/v1/messages": MESSAGES, "/v1/responses": RESPONSES}
#: Every name a model's `apis` setting may list.
API_NAMES = ("chat", *(t.api for t in TRANSLATED.values()))


def translator_for(endpoint: str) -> Translator | None:
    return TRANSLATED.get(endpoint)


__all__ = [
    "API_NAMES",
    "CHAT_ENDPOINT",
    "MESSAGES",
    "RESPONSES",
    "TRANSLATED",
    "Translator",
    "Untranslatable",
    "translator_for",
]
