"""`batch verify` compares each recorded line with the one decided again from the log
(projections/verify.py): field by field, but a basis key that only explains a line and was
added after a batch was issued does not count as a difference for that batch."""

from __future__ import annotations

from typing import Any

from projections.verify import _compare_lines


def line(**basis: Any) -> dict[str, Any]:
    return {"kind": "usage", "amount": "-3.00", "basis": {"usage_revision": 7, **basis}}


CHANGED = {"contract_changed_from": "2026-10-01"}
SAID = ["untagged api_calls usage from 2026-10-01 00:00 UTC assigned to ct_b (jobs)"]


def test_an_explanation_added_later_is_not_a_difference_for_a_batch_issued_without_it() -> None:
    assert _compare_lines("ct_a", "INV-000003", [line(**CHANGED)],
                          [line(**CHANGED, contract_changes=SAID)], position=9) == []


def test_once_recorded_it_is_compared_like_any_other_field() -> None:
    found = _compare_lines("ct_a", "INV-000003", [line(**CHANGED, contract_changes=SAID)],
                           [line(**CHANGED, contract_changes=["terms amended from 2026-10-01"])],
                           position=9)
    assert [d.what for d in found] == ["lines[0].basis"]


def test_a_difference_in_money_is_still_found() -> None:
    found = _compare_lines("ct_a", "INV-000003", [line(**CHANGED)],
                           [{**line(**CHANGED, contract_changes=SAID), "amount": "-2.00"}],
                           position=9)
    assert [d.what for d in found] == ["lines[0].amount"]
