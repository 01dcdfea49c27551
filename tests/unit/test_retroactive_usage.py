"""Amendments and terminations received after a period's usage was invoiced: the period is
priced again with the terms in effect at its end, over the days served (contract.md,
Amendments and Termination), on the contract's next invoice."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from domain.billing import Held, InvoiceDue, NothingDue
from domain.contract import Contract
from domain.money import round_money
from domain.terms import PerUnit, UsageComponent
from tests.unit.billing_fixtures import (
    FakeUsage,
    amounts,
    at,
    bill,
    bill_if_due,
    billed_by_period,
    contract,
    milestone,
    months,
    run,
    subscription,
    usage,
)


def per_unit(price: str) -> PerUnit:
    return PerUnit(Decimal(price))


def october_invoiced(*events: tuple[int, str], minimum: str | None = None
                     ) -> tuple[Contract, FakeUsage]:
    c = contract(usage(pricing=per_unit("1"), minimum=minimum))
    meter = FakeUsage()
    for day, quantity in events:
        meter.add(at(date(2026, 10, day)), quantity)
    bill(c, date(2026, 11, 1), meter)
    return c, meter


def test_a_retroactive_price_rise_bills_the_difference_on_the_next_invoice() -> None:
    c, meter = october_invoiced((5, "10"))
    c.amend(date(2026, 10, 15), (usage(pricing=per_unit("2")),), None, None, "m-a")
    due = bill(c, date(2026, 11, 5), meter)
    assert amounts(due) == [("usage", "api", "10.00")]
    line = due.lines[0]
    assert (line.period_start, line.period_end) == (date(2026, 10, 1), date(2026, 11, 1))
    assert "priced again: the contract changed from 2026-10-15" in line.description
    assert line.basis["already_billed"] == "10.00" and line.basis["priced_amount"] == "20.00"
    assert isinstance(run(c, date(2026, 11, 6), meter), NothingDue)  # once


def test_a_retroactive_price_cut_credits_the_difference() -> None:
    c, meter = october_invoiced((5, "10"))
    c.amend(date(2026, 10, 20), (usage(pricing=per_unit("0.25")),), None, None, "m-a")
    assert amounts(bill(c, date(2026, 11, 5), meter)) == [("usage", "api", "-7.50")]


def test_a_retroactive_minimum_change_changes_the_true_up() -> None:
    c, meter = october_invoiced((5, "10"), minimum="50.00")
    lowered = usage(pricing=per_unit("1"), minimum="30.00")
    c.amend(date(2026, 10, 2), (lowered,), None, None, "m-a")
    assert amounts(bill(c, date(2026, 11, 5), meter)) == [("minimum_true_up", "api", "-20.00")]


def test_a_metric_amended_away_after_invoicing_is_credited() -> None:
    c = contract(subscription("100.00"), usage(pricing=per_unit("1")))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "10")
    bill(c, date(2026, 10, 1), meter)
    bill(c, date(2026, 11, 1), meter)
    c.amend(date(2026, 10, 15), (subscription("100.00"),), None, None, "m-a")
    due = bill(c, date(2026, 11, 5), meter)
    assert ("usage", "api", "-10.00") in amounts(due)


def test_a_retroactive_termination_credits_the_usage_after_the_end() -> None:
    c, meter = october_invoiced((5, "10"), (20, "5"))
    c.terminate(date(2026, 10, 16), "m-t")
    due = bill(c, date(2026, 11, 5), meter)
    assert amounts(due) == [("usage", "api", "-5.00")]
    assert (due.lines[0].period_start, due.lines[0].period_end) == (
        date(2026, 10, 1), date(2026, 10, 16))


def test_a_termination_after_a_period_was_invoiced_credits_that_whole_period() -> None:
    c = contract(usage(pricing=per_unit("1"), minimum="30.00"))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "10")
    meter.add(at(date(2026, 11, 5)), "7")
    bill(c, date(2026, 11, 1), meter)
    bill(c, date(2026, 12, 1), meter)  # November: 7.00 and a true-up of 23.00
    c.terminate(date(2026, 11, 1), "m-t")  # received late: service ended with October
    due = bill(c, date(2026, 12, 2), meter)
    assert amounts(due) == [("usage", "api", "-7.00"), ("minimum_true_up", "api", "-23.00")]
    assert "service ended on 2026-11-01" in due.lines[0].description
    assert isinstance(run(c, date(2027, 1, 1), meter), NothingDue)


def test_a_termination_moved_later_bills_again_what_the_earlier_end_credited() -> None:
    c, meter = october_invoiced((5, "10"), (20, "5"))
    c.terminate(date(2026, 10, 16), "m-t")
    bill(c, date(2026, 11, 5), meter)  # credits the 5 units after the 16th
    c.terminate(date(2026, 10, 25), "m-t2")  # the end moved later: the 20th is served again
    assert amounts(bill(c, date(2026, 11, 6), meter)) == [("usage", "api", "5.00")]


def test_a_termination_received_before_billing_bills_up_to_the_end_as_before() -> None:
    c = contract(usage(pricing=per_unit("1")))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "10")
    meter.add(at(date(2026, 10, 20)), "5")
    c.terminate(date(2026, 10, 16), "m-t")
    assert amounts(bill(c, date(2026, 11, 1), meter)) == [("usage", "api", "10.00")]


def test_a_held_invoice_keeps_the_change_to_price_again() -> None:
    c, meter = october_invoiced((5, "10"))
    c.amend(date(2026, 10, 15), (usage(pricing=per_unit("2")),), None, None, "m-a")
    assert c.changed_from == date(2026, 10, 15)
    november = {"api_calls": datetime(2026, 11, 20, tzinfo=UTC)}  # November incomplete
    assert isinstance(run(c, date(2026, 12, 1), meter, november), Held)
    assert c.changed_from == date(2026, 10, 15)
    due = bill(c, date(2026, 12, 1), meter)
    assert ("usage", "api", "10.00") in amounts(due)
    assert c.changed_from is None


def test_a_run_for_an_earlier_cycle_date_keeps_the_change_for_the_periods_after_it() -> None:
    c = contract(usage(pricing=per_unit("1")), milestone())
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "10")
    bill(c, date(2026, 11, 1), meter)
    c.amend(date(2026, 10, 15), (usage(pricing=per_unit("2")), milestone()), None, None, "m-a")
    c.complete_milestone("go_live", date(2026, 9, 30), "m-ms")  # due by an earlier date
    early = bill(c, date(2026, 10, 1), meter)  # October is after this cycle date: not reached
    assert amounts(early) == [("milestone", "golive", "5000.00")]
    assert c.changed_from == date(2026, 10, 15)
    assert ("usage", "api", "10.00") in amounts(bill(c, date(2026, 11, 2), meter))


def test_a_replayed_contract_has_the_same_change_marker() -> None:
    c, _ = october_invoiced((5, "10"))
    c.amend(date(2026, 10, 15), (usage(pricing=per_unit("2")),), None, None, "m-a")
    c.terminate(date(2026, 10, 25), "m-t")
    replayed: Any = None
    for event in c.collect_events():
        replayed = event.mutate(replayed)
    assert replayed.changed_from == c.changed_from == date(2026, 10, 15)
    assert replayed.billed == c.billed


# --- the invariant, over generated histories --------------------------------------------------

START = date(2026, 10, 1)
DAY = st.integers(min_value=0, max_value=100).map(lambda n: START + timedelta(days=n))
PRICES = st.sampled_from(["1", "2", "0.5", "0.333"])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("usage"), DAY, st.sampled_from(["1", "7", "12"])),
        st.tuples(st.just("amend"), DAY, PRICES),
        st.tuples(st.just("run"), DAY, st.just("")),
        st.tuples(st.just("end"), DAY, st.just("")),
    ),
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(STEPS)
# Found by this property: December billed final at an end of 12-02, the end moved to 12-03
# after usage of 12-01 arrived, and an invoice for late October usage in between settled the
# usage revision past it: December's usage was never billed.
@example([("run", START + timedelta(days=62), ""), ("end", START + timedelta(days=62), ""),
          ("run", START, ""), ("usage", START + timedelta(days=61), "1"),
          ("end", START + timedelta(days=63), ""), ("usage", START, "1"), ("run", START, "")])
def test_every_period_bills_its_served_usage_at_the_terms_of_its_end(
    steps: list[tuple[str, date, str]],
) -> None:
    """However usage, runs, amendments (retroactive or not) and a termination interleave,
    once every period is final each one's usage lines sum to the rounded price of the usage
    it served, at the price in effect on its last day; periods after the end to nothing."""
    c = contract(usage(pricing=per_unit("1")))
    meter = FakeUsage()
    issued: list[InvoiceDue] = []
    last = START
    for i, (kind, day, value) in enumerate(steps):
        if kind == "usage":
            meter.add(at(day), value)
        elif kind == "amend" and (c.end_date is None or day < c.end_date):
            c.amend(day, (usage(pricing=per_unit(value)),), None, None, f"m-{i}")
        elif kind == "end":  # a second one moves the end, earlier or later
            c.terminate(day, f"m-{i}")
        elif kind == "run":
            last = max(last, day)
            bill_if_due(c, last, issued, meter)
    bill_if_due(c, date(2027, 3, 1), issued, meter)
    billed = billed_by_period(issued)
    for start, end in months(date(2026, 10, 1), 5):  # October to February: final
        served_until = min(end, c.end_date) if c.end_date else end
        used = sum((q for t, q, _ in meter.events if start <= t.date() < served_until),
                   Decimal(0))
        owed = Decimal(0)
        if start < served_until:
            component = c.terms_on(served_until - timedelta(days=1)).components[0]
            assert isinstance(component, UsageComponent)
            assert isinstance(component.pricing, PerUnit)
            owed = round_money(used * component.pricing.unit_amount, "USD")
        assert billed.get(start, Decimal(0)) == owed, (start, billed)

