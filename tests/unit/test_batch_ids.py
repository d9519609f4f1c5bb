"""Batch ids in both forms: `batch_<hex>` as stored, and the UUID form the
Together dialect shows (its OpenAPI spec gives batch ids `format: uuid`)."""

from __future__ import annotations

import uuid

from overnight._ids import batch_id_from, batch_uuid, new_batch_id


def test_a_new_id_maps_to_a_uuid_and_back_unchanged() -> None:
    for _ in range(100):
        batch_id = new_batch_id()
        shown = batch_uuid(batch_id)
        assert str(uuid.UUID(shown)) == shown
        assert batch_id_from(shown) == batch_id
        assert batch_id_from(batch_id) == batch_id


def test_the_uuid_carries_the_ids_bits() -> None:
    batch_id = "batch_0123456789abcdef0123456789abcdef"
    assert batch_uuid(batch_id) == "01234567-89ab-cdef-0123-456789abcdef"
    assert batch_id_from("01234567-89AB-CDEF-0123-456789ABCDEF") == batch_id


def test_other_text_passes_through_both_ways() -> None:
    for text in ("batch_1", "batch_nope", "file-123", "", "0123456789abcdef0123456789abcdef"):
        assert batch_uuid(text) == text
        assert batch_id_from(text) == text
