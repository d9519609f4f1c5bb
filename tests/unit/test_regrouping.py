"""Deciding whether to group a batch's lines across chunks, and cutting the
grouped copy into chunks (domain/regrouping.py): pure code."""

from __future__ import annotations

import json

from overnight.domain.lines import LineRules
from overnight.domain.regrouping import MAX_GROUPS, SAMPLE, GroupedChunks, PrefixGroups
from overnight.domain.validation import FileValidator


def groups_of(keys: list[int | None]) -> PrefixGroups:
    groups = PrefixGroups("/v1/chat/completions", 2048)
    for key in keys:
        groups.add(key)
    return groups


def test_mixed_prefixes_over_several_chunks_are_worth_grouping() -> None:
    groups = groups_of([7, 9, 7, 8, 9])
    assert list(groups.groups) == [0, 1, 0, 2, 1]  # numbered as they first appear
    assert groups.worth_grouping(chunks=2)


def test_nothing_is_written_where_grouping_cannot_help() -> None:
    assert not groups_of([7, 9, 7]).worth_grouping(chunks=1)  # one chunk: grouped within
    assert not groups_of([7, 7, 7]).worth_grouping(chunks=3)  # one prefix
    assert not groups_of([7, 7, 9, 9, 8]).worth_grouping(chunks=3)  # already grouped
    assert not groups_of(list(range(1000))).worth_grouping(chunks=9)  # no prefix shared


def test_prefixes_past_the_last_group_share_it_in_file_order() -> None:
    keys: list[int | None] = [*range(MAX_GROUPS + 10), None]
    groups = groups_of(keys)
    assert max(groups.groups) == MAX_GROUPS - 1
    assert list(groups.groups[MAX_GROUPS - 1 :]) == [MAX_GROUPS - 1] * 12
    assert groups.used() == MAX_GROUPS


def test_keying_stops_when_the_first_requests_share_no_prefix() -> None:
    unrelated = groups_of([*range(SAMPLE), 1, 2, 1, 2])
    assert unrelated.gave_up and len(unrelated.groups) == 0
    assert not unrelated.worth_grouping(chunks=9)
    # Half of them shared (pairs): kept on, and worth grouping when mixed.
    paired = groups_of([n // 2 for n in range(SAMPLE)] + [0, 1])
    assert not paired.gave_up and paired.worth_grouping(chunks=3)


def test_chunks_are_cut_at_the_limits_and_where_a_prefix_ends() -> None:
    cutter = GroupedChunks(chunk_lines=4, chunk_bytes=1 << 20)
    for group_size in (6, 3, 1):  # 10-byte lines
        for _ in range(group_size):
            cutter.line(10)
        cutter.group_ends()
    chunks = cutter.finish()
    # 6 = 4 + 2 (the end of the prefix closes the 2: a quarter of 4 or more);
    # then 3 in one chunk; the last group's single line closes too.
    assert [(c.start, c.end, c.first_line, c.requests) for c in chunks] == [
        (0, 40, 1, 4),
        (40, 60, 5, 2),
        (60, 90, 7, 3),
        (90, 100, 10, 1),
    ]
    assert [c.index for c in chunks] == [0, 1, 2, 3]


def test_small_groups_share_a_chunk() -> None:
    cutter = GroupedChunks(chunk_lines=20, chunk_bytes=1 << 20)
    for _ in range(6):
        cutter.line(10)
        cutter.group_ends()  # a group of one line: under a quarter of 20
    assert [c.requests for c in cutter.finish()] == [5, 1]


def test_chunk_bytes_cuts_too() -> None:
    cutter = GroupedChunks(chunk_lines=100, chunk_bytes=25)
    for _ in range(5):
        cutter.line(10)
    assert [(c.start, c.end) for c in cutter.finish()] == [(0, 20), (20, 40), (40, 50)]


def line(n: int, prompt: str) -> bytes:
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": prompt}, {"role": "user", "content": f"q{n}"}],
    }
    return json.dumps({"custom_id": f"r{n}", "body": body}).encode()


def validated(prompts: str, chunk_lines: int) -> tuple[PrefixGroups, int]:
    """`prompts` one letter a line, through the validator with its hook."""
    groups = PrefixGroups("/v1/chat/completions", 2048)
    rules = LineRules("/v1/chat/completions", models={"m"}, require_method_and_url=False)
    validator = FileValidator(rules, chunk_lines=chunk_lines, on_request=groups.add_request)
    offset = 0
    for n, prompt in enumerate(prompts):
        raw = line(n, prompt * 50)
        validator.feed(raw, offset)
        offset += len(raw) + 1
    report = validator.finish(offset)
    assert report.ok
    return groups, len(report.chunks)


def test_validation_keys_a_file_of_one_chunk_not_at_all() -> None:
    groups, chunks = validated("ABACBA", chunk_lines=6)
    assert chunks == 1
    assert len(groups.groups) == 0 and groups.used() == 0  # no prefix keyed
    assert not groups.worth_grouping(chunks)


def test_the_first_chunk_is_keyed_once_a_second_begins() -> None:
    groups, chunks = validated("ABACBA", chunk_lines=3)
    assert chunks == 2
    assert list(groups.groups) == [0, 1, 0, 2, 1, 0]  # numbered as they first appear
    assert groups.worth_grouping(chunks)
