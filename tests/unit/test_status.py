"""The batch status table, checked edge by edge against docs/architecture.md."""

from __future__ import annotations

import itertools

import pytest

from overnight.domain.status import (
    TERMINAL,
    TRANSITIONS,
    BatchStatus,
    StopReason,
    can_transition,
    sources_of,
)

S = BatchStatus

ALLOWED = {
    (S.VALIDATING, S.IN_PROGRESS),  # a
    (S.VALIDATING, S.FAILED),  # b
    (S.VALIDATING, S.CANCELLING),  # c
    (S.IN_PROGRESS, S.CANCELLING),  # d
    (S.IN_PROGRESS, S.FINALIZING),  # e
    (S.CANCELLING, S.FINALIZING),  # f
    (S.FINALIZING, S.COMPLETED),  # g
    (S.FINALIZING, S.EXPIRED),  # h
    (S.FINALIZING, S.CANCELLED),  # i
    (S.CANCELLING, S.CANCELLED),  # j
    (S.FINALIZING, S.FAILED),  # k
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(S, S)))
def test_every_pair_of_statuses(source: BatchStatus, target: BatchStatus) -> None:
    assert can_transition(source, target) is ((source, target) in ALLOWED)


def test_terminal_statuses_lead_nowhere() -> None:
    assert {S.FAILED, S.COMPLETED, S.EXPIRED, S.CANCELLED} == TERMINAL
    for status in TERMINAL:
        assert status.is_terminal
        assert TRANSITIONS[status] == frozenset()


def test_sources_of_is_the_reverse_table() -> None:
    assert sources_of(S.FINALIZING) == {S.IN_PROGRESS, S.CANCELLING}
    assert sources_of(S.CANCELLED) == {S.FINALIZING, S.CANCELLING}


def test_the_table_is_drawn_in_the_docs() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    for source, target in ALLOWED:
        assert (
            f"{source.value} -> {target.value}" in doc or f"{source.value} → {target.value}" in doc
        )


def test_stop_reasons_name_their_error_code_and_final_status() -> None:
    assert StopReason.CANCELLED.error_code == "batch_cancelled"
    assert StopReason.EXPIRED.error_code == "batch_expired"
    assert StopReason.CANCELLED.final_status is S.CANCELLED
    assert StopReason.EXPIRED.final_status is S.EXPIRED
