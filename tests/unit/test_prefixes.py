"""Prompt prefixes: which lines share one, and the order that runs them together."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

from overnight.domain.prefixes import grouped, prefix_key

CHAT = "/v1/chat/completions"
SYSTEMS = [f"You are assistant number {n}. " + "Be brief and exact. " * 40 for n in range(4)]


def chat(system: str | None, user: str, model: str = "m") -> dict[str, Any]:
    messages = [{"role": "user", "content": user}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return {"model": model, "messages": messages}


def test_lines_with_one_system_prompt_share_a_key_whatever_the_question() -> None:
    a = prefix_key(CHAT, chat(SYSTEMS[0], "What is 2 + 2?"), 2048)
    b = prefix_key(CHAT, chat(SYSTEMS[0], "Name a colour."), 2048)
    c = prefix_key(CHAT, chat(SYSTEMS[1], "What is 2 + 2?"), 2048)
    assert a is not None and a == b
    assert c is not None and c != a


def test_the_model_and_the_leading_messages_are_part_of_the_prefix() -> None:
    base = chat(SYSTEMS[0], "hi")
    other_model = chat(SYSTEMS[0], "hi", model="other")
    assert prefix_key(CHAT, base, 2048) != prefix_key(CHAT, other_model, 2048)
    turn = {"role": "assistant", "content": "Earlier answer."}
    longer = {"model": "m", "messages": [*base["messages"][:1], turn, *base["messages"][1:]]}
    assert prefix_key(CHAT, longer, 2048) != prefix_key(CHAT, base, 2048)


def test_prefixes_that_agree_for_chars_characters_are_one() -> None:
    a = chat("Same opening. " * 20 + "Tail A", "q")
    b = chat("Same opening. " * 20 + "Tail B", "q")
    assert prefix_key(CHAT, a, 64) == prefix_key(CHAT, b, 64)
    assert prefix_key(CHAT, a, 4096) != prefix_key(CHAT, b, 4096)


def test_other_shapes_have_prefixes_and_embeddings_none() -> None:
    messages = {"model": "m", "system": SYSTEMS[0], "messages": [{"role": "user", "content": "x"}]}
    responses = {"model": "m", "instructions": SYSTEMS[0], "input": "x"}
    completion = {"model": "m", "prompt": "Translate to French: cat"}
    assert prefix_key("/v1/messages", messages, 2048) is not None
    assert prefix_key("/v1/responses", responses, 2048) is not None
    assert prefix_key("/v1/completions", completion, 2048) is not None
    assert prefix_key("/v1/embeddings", {"model": "m", "input": "x"}, 2048) is None


def test_the_key_is_the_same_in_every_process() -> None:
    # A stable hash, not Python's salted one: every worker must send a
    # prefix to the same replica.
    code = (
        "from overnight.domain.prefixes import prefix_key; "
        "print(prefix_key('/v1/chat/completions', {'model': 'm', 'messages': ["
        "{'role': 'system', 'content': 'Be kind.'}, {'role': 'user', 'content': 'hi'}]}, 2048))"
    )
    elsewhere = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "1"},  # this process's seed is random
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert elsewhere == str(prefix_key(CHAT, chat("Be kind.", "bye"), 2048))


def test_grouping_brings_each_prefix_together_in_order_of_first_appearance() -> None:
    rng = random.Random(7)
    lines = [(f"id-{n}", rng.randrange(4)) for n in range(200)]
    out = grouped(lines, lambda line: line[1])
    assert sorted(out) == sorted(lines)  # every line once
    runs = [key for n, (_, key) in enumerate(out) if n == 0 or out[n - 1][1] != key]
    assert len(runs) == 4  # one run per prefix
    first_seen = list(dict.fromkeys(key for _, key in lines))
    assert runs == first_seen
    for key in range(4):  # file order within a group
        assert [i for i, k in out if k == key] == [i for i, k in lines if k == key]


def test_lines_without_a_prefix_keep_their_place_between_groups() -> None:
    lines = [("a", 1), ("x", None), ("b", 2), ("c", 1), ("y", None), ("d", 2)]
    out = grouped(lines, lambda line: line[1])
    assert [name for name, _ in out] == ["a", "c", "x", "b", "d", "y"]


def test_a_file_already_grouped_is_unchanged() -> None:
    lines = [(n, n // 10) for n in range(50)]
    assert grouped(lines, lambda line: line[1]) == lines
