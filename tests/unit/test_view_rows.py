"""The views' row helpers give the same values as the plain library calls they stand for."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.money import round_money
from projections.audit import _json
from projections.ledger import JOURNAL
from projections.persistence import Changes
from projections.projection import to_minor

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text()
           | st.decimals(allow_nan=False) | st.dates() | st.datetimes())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=5), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_a_rows_json_is_json_dumps_with_sorted_keys(value: Any) -> None:
    assert _json(value) == json.dumps(value, sort_keys=True, default=str)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=5, min_value=-10**9,
                   max_value=10**9), st.sampled_from(["USD", "JPY", "KWD"]))
def test_minor_units_are_the_rounded_amount_scaled(amount: Decimal, currency: str) -> None:
    places = {"USD": 2, "JPY": 0, "KWD": 3}[currency]
    assert to_minor(amount, currency) == int(round_money(amount, currency).scaleb(places))


def test_an_append_only_table_takes_no_upserts() -> None:
    """A rebuild loads append-only tables without their primary key (see Table): a row put
    by key could find none to upsert by, so put() refuses them."""
    with pytest.raises(TypeError, match="append-only"):
        Changes().put(JOURNAL, ("INV-1/issue", 0, "2026-12-01", "issue", "INV-1", "c", "EUR",
                                "receivable", 100, ""), new=True)
