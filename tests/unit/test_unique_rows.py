"""The unique values ingest writes from stored usage records are those of their increments."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from domain.usage import (
    MAX_COUNTED_VALUE_BYTES,
    RecordedUsage,
    counted_value,
    property_values,
    usage_record,
)
from infra.store.batch import record_unique_rows, unique_rows

T0 = datetime(2026, 10, 3, 10, tzinfo=UTC)

values = st.text(max_size=5) | st.integers() | st.booleans() | st.none() | st.floats(
    allow_nan=False) | st.lists(st.integers(), max_size=2)
properties = st.dictionaries(st.sampled_from(["user", "region", "n", "é\"k"]), values, max_size=3)
records = st.lists(st.builds(
    lambda i, props, minutes, contract: usage_record(
        f"u-{i}", "f", "cus_1", "api_calls", Decimal(1), T0 + timedelta(minutes=minutes),
        json.dumps(props, sort_keys=True, separators=(",", ":")), contract),
    st.integers(0, 10**6), properties, st.integers(0, 120), st.sampled_from([None, "ct_1"]),
), max_size=20)


@given(records, st.none() | st.sets(st.sampled_from(["user", "n", "é\"k", "other"])))
def test_record_unique_rows_are_the_increments_unique_rows(
        batch: list[Any], names: set[str] | None) -> None:
    stored = json.loads(json.dumps(batch))  # as a stored batch gives them back: lists
    increments = [RecordedUsage.of(r).increment() for r in stored]
    assert record_unique_rows(stored, names) == set(unique_rows(increments, names))


@given(st.lists(st.text(), min_size=2, max_size=2, unique=True))
def test_counted_values_stay_distinct_and_fit_the_stores_key(values: list[str]) -> None:
    # QA (helper-25, F7): U+0000, or a value over the index's entry size, stopped ingest.
    first, second = map(counted_value, values)
    assert first != second
    for value, stored in zip(values, (first, second), strict=True):
        assert "\x00" not in stored
        assert len(stored.encode("utf-8", "surrogatepass")) <= MAX_COUNTED_VALUE_BYTES
        if stored != value:
            assert stored.startswith("\x01sha256:")


def test_a_counted_value_is_kept_as_it_is_unless_the_store_cannot_key_it() -> None:
    assert counted_value("alice@example.com") == "alice@example.com"
    assert counted_value("é" * 128) == "é" * 128  # 256 bytes
    assert counted_value("é" * 129).startswith("\x01sha256:")
    assert counted_value("bob\x00").startswith("\x01sha256:")
    # A value that looks like a digest is made one, so no kept value can equal a digest.
    assert counted_value("\x01sha256:00") != "\x01sha256:00"


@given(st.integers() | st.booleans())
def test_a_value_and_its_json_text_are_one_counted_value(value: int | bool) -> None:
    # QA11 (F2): counted "as their text": 7 and "7" were one value, True and "true" were not.
    text = json.dumps(value)
    assert property_values({"user": value}, "u-1") == property_values({"user": text}, "u-2")
