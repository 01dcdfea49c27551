"""Assigning untagged usage to a contract (domain/usage_assignments.py): what is refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from domain.usage_assignments import (
    AssignmentRejected,
    UsageAssignment,
    UsageAssignments,
    assigned_usage,
)
from tests.unit.billing_fixtures import contract, usage

NOW = datetime(2026, 11, 2, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)


def test_an_assignment_names_the_customer_metric_window_and_contract() -> None:
    given = UsageAssignments()
    a = given.assign(contract(usage()), "api_calls", OCT, NOV, " sandbox ", "ops", NOW)
    assert a == UsageAssignment("cus_1", "api_calls", OCT, NOV, "ct_1", "sandbox", "ops", NOW)
    assert given.in_force() == [a]
    assert assigned_usage([a.to_json()]) == {("cus_1", "api_calls"): (a,)}


@pytest.mark.parametrize(("metric", "start", "end", "reason", "said"), [
    ("storage", OCT, NOV, "r", "prices no usage of storage (its metrics: api_calls)"),
    ("api_calls", OCT, NOV, " ", "give the reason"),
    ("api_calls", NOV, OCT, "r", "the window's start 2026-11-01T00:00:00Z is not before its "
     "end 2026-10-01T00:00:00Z; give a start before the end"),
    ("api_calls", OCT.replace(minute=7), NOV, "r", "inside a 15-minute meter bucket"),
    ("api_calls", OCT.replace(tzinfo=None), NOV, "r", "has no offset"),
])
def test_what_cannot_be_assigned_is_refused_with_what_to_give(
    metric: str, start: datetime, end: datetime, reason: str, said: str
) -> None:
    with pytest.raises(AssignmentRejected, match=re.escape(said)):
        UsageAssignments().assign(contract(usage()), metric, start, end, reason, "ops", NOW)


def test_windows_do_not_overlap_but_the_same_window_again_replaces_it() -> None:
    given = UsageAssignments()
    given.assign(contract(usage()), "api_calls", OCT, NOV, "first", "ops", NOW)
    other = contract(usage(), contract_id="ct_2")
    with pytest.raises(AssignmentRejected, match="already assigned to ct_1") as refused:
        given.assign(other, "api_calls", datetime(2026, 10, 15, tzinfo=UTC), NOV, "r", "o", NOW)
    # Dates are read in each contract's timezone, so the instants to give are named.
    assert "replace its assignment: --from 2026-10-01T00:00:00Z --to 2026-11-01T00:00:00Z" in (
        str(refused.value))
    given.assign(other, "api_calls", OCT, NOV, "corrected", "ops", NOW)
    assert [(a.contract_id, a.reason) for a in given.in_force()] == [("ct_2", "corrected")]


def test_an_assignment_withdrawn_is_no_longer_in_force() -> None:
    given = UsageAssignments()
    given.assign(contract(usage()), "api_calls", OCT, NOV, "first", "ops", NOW)
    with pytest.raises(AssignmentRejected, match="no assignment of cus_1's untagged api_calls "
                       "starts at 2026-11-01T00:00:00"):
        given.withdraw("cus_1", "api_calls", NOV)
    assert given.withdraw("cus_1", "api_calls", OCT).contract_id == "ct_1"
    assert given.in_force() == []
