"""Usage billed before an amendment, reconciled with the components in force at the period's end
(domain/billed_usage.py): a renamed component carries over what its old id billed; a metric
no longer priced is credited. contract.md: "No duplicates, ever"."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from domain.billed import BilledState
from domain.billing import InvoiceDue, NothingDue
from domain.contract import Contract
from domain.terms import PerUnit
from tests.unit.billing_fixtures import (
    FakeUsage,
    amounts,
    at,
    bill,
    bill_if_due,
    billed_by_period,
    contract,
    months,
    run,
    subscription,
    usage,
)

ONE = PerUnit(Decimal(1))


def test_a_retroactive_rename_does_not_bill_an_invoiced_period_again() -> None:
    c = contract(usage(pricing=ONE))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "10")
    assert amounts(bill(c, date(2026, 11, 1), meter)) == [("usage", "api", "10.00")]
    c.amend(date(2026, 10, 15), (usage(pricing=ONE, component_id="api_v2"),), None, None, "m-a")
    assert isinstance(run(c, date(2026, 11, 5), meter), NothingDue)


def test_late_usage_after_a_rename_bills_only_the_difference_under_the_new_id() -> None:
    c = contract(usage(pricing=ONE))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "10")
    bill(c, date(2026, 11, 1), meter)
    c.amend(date(2026, 10, 15), (usage(pricing=ONE, component_id="api_v2"),), None, None, "m-a")
    meter.add(at(date(2026, 10, 20)), "3")  # late
    due = bill(c, date(2026, 12, 1), meter)
    assert ("late_usage", "api_v2", "3.00") in amounts(due)
    late = next(line for line in due.lines if line.kind == "late_usage")
    assert late.basis["billed_as"] == ["api"] and late.basis["already_billed"] == "10.00"
    # The carry-over is settled: the next late event counts October's 13 units once.
    meter.add(at(date(2026, 10, 21)), "1")
    assert ("late_usage", "api_v2", "1.00") in amounts(bill(c, date(2027, 1, 1), meter))


def test_late_usage_in_a_period_repriced_by_an_amendment_says_both() -> None:
    # QA: the line priced again by the amendment was labelled late usage and said nothing of
    # the amendment. Usage arriving late is still a late_usage line (contract.md); it now
    # also names the change, which explain quotes.
    c = contract(usage(pricing=ONE))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "10")
    bill(c, date(2026, 11, 1), meter)
    c.amend(date(2026, 10, 15), (usage(pricing=PerUnit(Decimal(2))),), None, None, "m-a")
    meter.add(at(date(2026, 10, 20)), "3")  # late
    line = next(line for line in bill(c, date(2026, 12, 1), meter).lines
                if line.period_start == date(2026, 10, 1))
    assert (line.kind, line.amount) == ("late_usage", Decimal("16.00"))  # 13 at 2.00 - 10.00
    assert line.description == ("api: late usage of api_calls 2026-10-01 to 2026-11-01, priced "
                                "again: the contract changed from 2026-10-15 after it was "
                                "invoiced")
    assert line.basis["contract_changes"] == ["terms amended from 2026-10-15"]


def test_the_final_invoice_after_a_progressive_bill_and_a_rename_bills_only_the_rest() -> None:
    c = contract(usage(pricing=ONE), threshold="10.00")
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "20")
    assert amounts(bill(c, date(2026, 10, 10), meter)) == [("usage", "api", "20.00")]
    c.amend(date(2026, 10, 15), (usage(pricing=ONE, component_id="api_v2"),), None, None, "m-a")
    meter.add(at(date(2026, 10, 20)), "5")
    assert amounts(bill(c, date(2026, 11, 1), meter)) == [("usage", "api_v2", "5.00")]


def test_a_renamed_component_with_a_minimum_does_not_bill_the_true_up_again() -> None:
    c = contract(usage(pricing=ONE, minimum="50.00"))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "10")
    assert amounts(bill(c, date(2026, 11, 1), meter)) == [
        ("usage", "api", "10.00"), ("minimum_true_up", "api", "40.00")]
    renamed = usage(pricing=ONE, component_id="api_v2", minimum="50.00")
    c.amend(date(2026, 10, 15), (renamed,), None, None, "m-a")
    meter.add(at(date(2026, 10, 6)), "30")  # late: 40.00 of usage, still below the minimum
    assert amounts(bill(c, date(2026, 11, 2), meter)) == [
        ("late_usage", "api_v2", "30.00"), ("minimum_true_up", "api_v2", "-30.00")]


def test_usage_billed_under_a_component_amended_away_is_credited_at_the_period_end() -> None:
    c = contract(subscription("100.00"), usage(pricing=ONE), threshold="10.00")
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "20")
    bill(c, date(2026, 10, 10), meter)  # October's subscription and 20.00 of usage to date
    c.amend(date(2026, 10, 15), (subscription("100.00"),), None, None, "m-a")  # no usage priced
    due = bill(c, date(2026, 11, 1), meter)
    assert ("usage", "api", "-20.00") in amounts(due)
    credit = next(line for line in due.lines if line.component_id == "api")
    assert credit.quantity == Decimal(-20) and credit.basis["withdrawn"] is True
    assert "do not price it" in credit.description
    assert not any(line.component_id == "api" for line in bill(c, date(2026, 12, 1)).lines)


def test_usage_billed_before_terms_replaced_from_the_start_to_price_none_is_credited() -> None:
    # QA (the reassignment property): the amendment for the start date replaces the only
    # terms that priced usage, so no version prices any and billing skipped usage altogether.
    c = contract(subscription("100.00"), usage(pricing=ONE))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "20")
    bill(c, date(2026, 11, 1), meter)
    c.amend(date(2026, 10, 1), (subscription("100.00"),), None, None, "m-a")
    assert c.usage_metrics() == frozenset()
    assert ("usage", "api", "-20.00") in amounts(bill(c, date(2026, 12, 1), meter))
    assert not any(line.component_id == "api" for line in bill(c, date(2027, 1, 1)).lines)


def test_a_component_that_keeps_its_id_but_prices_another_metric_bills_it_once() -> None:
    # QA: the credit of the old metric settled the component's key after its new billing,
    # erasing it, so the next run billed the new metric's usage again.
    cents = PerUnit(Decimal("0.01"))
    c = contract(usage(pricing=cents), threshold="50.00")
    meter = FakeUsage()
    meter.add_of("api_calls", at(date(2026, 10, 5)), "6000")
    assert amounts(bill(c, date(2026, 10, 10), meter)) == [("usage", "api", "60.00")]
    c.amend(date(2026, 10, 15), (usage("api_requests", cents),), None, None, "m-a")
    meter.add_of("api_requests", at(date(2026, 10, 20)), "2000")
    assert sorted(amounts(bill(c, date(2026, 11, 1), meter))) == [
        ("usage", "api", "-60.00"), ("usage", "api", "20.00")]
    assert isinstance(run(c, date(2026, 12, 1), meter), InvoiceDue) is False or all(
        line.period_start != date(2026, 10, 1) for line in bill(c, date(2026, 12, 1), meter).lines)


def test_a_progressive_bill_over_an_id_that_priced_another_metric_credits_that_first() -> None:
    cents = PerUnit(Decimal("0.01"))
    c = contract(usage(pricing=cents), threshold="10.00")
    meter = FakeUsage()
    meter.add_of("api_calls", at(date(2026, 10, 5)), "6000")
    bill(c, date(2026, 10, 10), meter)  # 60.00 of api_calls to date
    c.amend(date(2026, 10, 11), (usage("api_requests", cents),), None, None, "m-a")
    meter.add_of("api_requests", at(date(2026, 10, 12)), "2000")
    assert sorted(amounts(bill(c, date(2026, 10, 15), meter))) == [
        ("usage", "api", "-60.00"), ("usage", "api", "20.00")]
    final = run(c, date(2026, 11, 1), meter)
    assert not isinstance(final, InvoiceDue) or all(
        line.amount == 0 for line in final.lines)


def test_a_settlement_stored_before_metrics_were_kept_learns_them_from_the_terms() -> None:
    record: dict[str, Any] = {
        "subscriptions": [], "true_ups": [], "milestones": {}, "usage_revision": 1,
        "usage": [["api", "2026-10-01", "10", "10.00", "2026-11-01", True]],
    }
    c = contract(usage(pricing=ONE))
    c.amend(date(2026, 10, 15), (usage(pricing=ONE, component_id="api_v2"),), None, None, "m-a")
    metrics = {"api": "api_calls"}
    old = BilledState.from_record(record, metric_of=lambda cid: metrics.get(cid, ""))
    assert old.usage[("api", date(2026, 10, 1))].metric == "api_calls"
    c.billed.apply(old)
    assert isinstance(run(c, date(2026, 11, 5)), NothingDue)


def test_a_replayed_contract_resolves_the_metric_of_old_records_itself() -> None:
    c = contract(usage(pricing=ONE))
    assert c._usage_metric_of("api") == "api_calls"
    assert c._usage_metric_of("nothing") == ""


# --- the invariant, over generated histories --------------------------------------------------

START = date(2026, 10, 1)
DAY = st.integers(min_value=0, max_value=120).map(lambda n: START + timedelta(days=n))
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("usage"), DAY, st.integers(min_value=0, max_value=40)),
        st.tuples(st.just("rename"), DAY, st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("run"), DAY, st.just(0)),
    ),
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(STEPS, st.sampled_from([None, "15.00"]), st.sampled_from([None, "12.00"]))
# Found by this test: a progressive bill under the terms of the day before, then a rename in
# force at the period's end, then the same cycle date again billed the usage twice.
@example([("usage", date(2027, 1, 1), 15), ("rename", date(2027, 1, 2), 0),
          ("run", date(2027, 1, 2), 0), ("run", date(2027, 1, 2), 0)], "15.00", None)
def test_renames_never_change_what_a_period_bills(
    steps: list[tuple[str, date, int]], threshold: str | None, minimum: str | None
) -> None:
    """However renames, runs (progressive or final) and late usage interleave, each period's
    usage lines sum to the price of all its usage at the unchanged price: billed once."""
    c: Contract = contract(usage(pricing=ONE, minimum=minimum), threshold=threshold)
    meter = FakeUsage()
    issued: list[InvoiceDue] = []
    last_run = START
    for i, (kind, day, n) in enumerate(steps):
        if kind == "usage":
            meter.add(at(day), str(n))
        elif kind == "rename":
            renamed = usage(pricing=ONE, minimum=minimum, component_id=f"api_{n}")
            c.amend(day, (renamed,), None, None, f"m-{i}")
        else:
            last_run = max(last_run, day)  # a run bills by its cycle date; dates never go back
            bill_if_due(c, last_run, issued, meter)
    bill_if_due(c, date(2027, 3, 1), issued, meter)
    billed = billed_by_period(issued)
    for start, end in months(date(2026, 10, 1), 5):  # October to February: final
        used = sum((q for t, q, _ in meter.events if start <= t.date() < end), Decimal(0))
        owed = max(used, Decimal(minimum)) if minimum else used
        assert billed.get(start, Decimal(0)) == owed, (start, billed)

