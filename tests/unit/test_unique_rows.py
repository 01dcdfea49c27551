"""The unique values ingest writes from stored usage records are those of their increments."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from domain.usage import RecordedUsage, usage_record
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
