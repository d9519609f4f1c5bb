"""Prompt prefixes: which requests share one, and an order that runs them together.

Model servers keep the KV cache of prompt prefixes (vLLM and SGLang prefix
caching, llama.cpp's prompt cache; llama-cpp-python reuses the longest
common prefix with the previous prompt). Lines that share a system prompt
and leading messages cost a fraction of the prefill when they run back to
back, or on the replica that has just seen that prefix; a file in arbitrary
order wastes that.

A request's prefix is what comes before its last turn: the system prompt or
instructions and every message but the last, rendered to text, cut to
`chars` characters and hashed (a stable 64-bit hash, the same in every
process, so that every worker sends a prefix to the same replica). A
request with nothing before its last turn (one user message, a completion
prompt) is keyed by the first `chars` characters of that turn, so lines
opening with the same long instruction are grouped too. Embeddings have no
prefix worth caching: they get no key.

Pure code: the runner calls `prefix_key` and `grouped`; validation's
grouping across chunks (domain/regrouping.py) calls `prefix_text`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

#: Endpoints whose requests are prompts a model prefills (and can cache).
PROMPT_ENDPOINTS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"}
)

T = TypeVar("T")


def prefix_key(endpoint: str, body: dict[str, Any], chars: int) -> int | None:
    """A stable 64-bit hash of the request's prompt prefix; None when the
    endpoint has no prompt to cache or the body names none."""
    text = prefix_text(endpoint, body, chars)
    if text is None:
        return None
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def prefix_text(endpoint: str, body: dict[str, Any], chars: int) -> str | None:
    """The request's prompt prefix as text, cut to `chars` characters;
    None when there is none. Equal texts are one prefix (what `prefix_key`
    hashes, stably, for replicas; a grouping inside one process may use
    Python's faster, per-process `hash`)."""
    if endpoint not in PROMPT_ENDPOINTS:
        return None
    return _prefix_text(body, chars)[:chars] or None


def _prefix_text(body: dict[str, Any], chars: int) -> str:
    leading: list[Any] = []
    for field in ("system", "instructions"):  # Messages, Responses
        if body.get(field):
            leading.append(body[field])
    turns = body.get("messages")
    if turns is None:
        turns = body.get("input")  # Responses: a string or a list of items
    if isinstance(turns, list) and turns:
        leading.extend(turns[:-1])
        last: Any = turns[-1]
    else:
        last = turns if turns is not None else body.get("prompt")
    if not leading:
        if last is None:
            return ""
        leading = [last]
    # The model is part of the prefix: two models never share a cache.
    return _rendered([body.get("model"), *leading], chars)


def _rendered(parts: list[Any], chars: int) -> str:
    """The parts as text, one after another, until `chars` characters: a
    long conversation is not rendered past what decides its key."""
    pieces: list[str] = []
    length = 0
    for part in parts:
        piece = part if isinstance(part, str) else _json(part)
        pieces.append(piece)
        length += len(piece) + 1
        if length >= chars:
            break
    # A rare clash of two renderings only puts two prefixes in one group.
    return "\x1e".join(pieces)


def _json(value: Any) -> str:
    """msgspec, the decoder of input lines, renders every value it read,
    integers past 64 bits included: orjson refuses those, and one such line
    failed every line of its chunk."""
    return _encode_sorted(value).decode()


_encode_sorted = msgspec.json.Encoder(order="sorted").encode


def grouped(items: Sequence[T], key: Callable[[T], int | None]) -> list[T]:
    """`items` with those of one key brought together, the groups in the
    order their first item appears and each group in file order; items
    with no key stay where they stand relative to the groups' order. A file
    already grouped (or with no shared prefix) comes back unchanged."""
    groups: dict[int, list[T]] = {}
    loose = 0  # keys are unsigned: an item without one is a group of its own at -n
    for item in items:
        k = key(item)
        if k is None:
            loose -= 1
            groups[loose] = [item]
        else:
            groups.setdefault(k, []).append(item)
    return [item for group in groups.values() for item in group]
