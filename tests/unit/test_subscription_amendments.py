"""Amendments of a billed in-advance period: credits and charges that add up to the cent
(domain/subscription_billing.py: `_bill_segments`, `_credited`)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.billing import InvoiceDue
from domain.calendar import ServicePeriod, prorate
from domain.contract import Contract
from domain.money import round_money
from domain.terms import SubscriptionComponent
from tests.unit.billing_fixtures import (
    amounts,
    bill,
    bill_if_due,
    contract,
    run,
    subscription,
)

NOVEMBER = ServicePeriod(date(2026, 11, 1), date(2026, 12, 1))


def test_two_amendments_in_one_period_credit_the_old_amount_once() -> None:
    c = contract(subscription("100.00"), start=date(2026, 11, 1))
    bill(c, date(2026, 11, 1))
    c.amend(date(2026, 11, 11), (subscription("200.00"),), None, None, "m-1")
    c.amend(date(2026, 11, 21), (subscription("300.00"),), None, None, "m-2")
    due = bill(c, date(2026, 12, 1))
    assert amounts(due) == [
        ("subscription", "platform", "300.00"),  # December
        ("proration", "platform", "-66.67"),  # 20 unused days of 30 at 100, one credit
        ("proration", "platform", "66.67"),  # 10 days at 200
        ("proration", "platform", "100.00"),  # 10 days at 300
    ]
    assert due.total == Decimal("400.00")


def test_a_credit_is_what_was_billed_less_the_rounded_worth_of_the_days_kept() -> None:
    # Amended twice, invoiced after each: 100.00, then 133.33 for 20 days at 200 less 66.67,
    # then 10 of those days credited as 133.33 less 66.67 kept: 66.66, not 66.67.
    c = contract(subscription("100.00"), start=date(2026, 11, 1))
    bill(c, date(2026, 11, 1))
    c.amend(date(2026, 11, 11), (subscription("200.00"),), None, None, "m-1")
    first = bill(c, date(2026, 11, 12))
    assert amounts(first) == [("proration", "platform", "-66.67"),
                              ("proration", "platform", "133.33")]
    c.amend(date(2026, 11, 21), (subscription("300.00"),), None, None, "m-2")
    second = bill(c, date(2026, 11, 22))
    assert amounts(second) == [("proration", "platform", "-66.66"),
                               ("proration", "platform", "100.00")]
    assert second.lines[0].basis["billed_stretch"] == ["2026-11-11", "2026-12-01"]
    assert Decimal("100.00") + first.total + second.total == Decimal("200.00")


AMOUNTS = st.sampled_from(["100.00", "200.00", "333.33", "0.07", "1000.00", "99.99"])
DAY = st.integers(min_value=0, max_value=29).map(lambda n: date(2026, 11, 1) + timedelta(n))


@settings(max_examples=200, deadline=None)
@given(AMOUNTS, st.lists(st.tuples(DAY, AMOUNTS, st.booleans()), max_size=6),
       st.one_of(st.none(), DAY.filter(lambda d: d > date(2026, 11, 1))))
def test_a_periods_lines_add_up_to_the_rounded_worth_of_what_stays_billed(
    first: str, amendments: list[tuple[date, str, bool]], end: date | None
) -> None:
    """However amendments (and a termination) arrive and are invoiced, what November's lines
    add up to is each segment left billed at its rounded worth: no cent gained or lost."""
    c: Contract = contract(subscription(first), start=date(2026, 11, 1))
    issued = [bill(c, date(2026, 11, 1))]
    for i, (effective, amount, invoice_now) in enumerate(amendments):
        if c.end_date is not None and effective >= c.end_date:
            continue
        c.amend(effective, (subscription(amount),), None, None, f"m-{i}")
        if invoice_now:
            bill_if_due(c, date(2026, 11, 2) + timedelta(days=i), issued)
    if end is not None:
        c.terminate(end, "m-end")
    bill_if_due(c, date(2026, 11, 30), issued)
    lines = [ln for due in issued for ln in due.lines if ln.period_start < NOVEMBER.end]
    kept = c.billed.subscriptions[("platform", NOVEMBER.start)]
    worth = sum((round_money(prorate(s.rate, ServicePeriod(s.start, s.end), NOVEMBER), "USD")
                 for s in kept), Decimal(0))
    assert sum((ln.amount for ln in lines), Decimal(0)) == worth
    served_until = end or NOVEMBER.end
    assert kept[0].start == NOVEMBER.start and kept[-1].end == served_until
    for s in kept:  # billed at what the terms say, on its first and last day
        for day in (s.start, s.end - timedelta(days=1)):
            owed = c.terms_on(day).component("platform")
            assert isinstance(owed, SubscriptionComponent)
            assert s.rate == owed.amount * owed.quantity



def test_an_amendment_that_leaves_a_subscription_as_it_was_does_not_cut_its_period() -> None:
    # QA (helper-26, F1): amended from 12-25 to the same terms, December was billed 12-01 to
    # 12-25 and the rest later, rounded piece by piece: 2715.82, where one line is 2715.83.
    same = subscription("1810.55", quantity="1.5")
    c = contract(same, start=date(2026, 12, 1))
    c.amend(date(2026, 12, 25), (same,), None, None, "m-1")
    assert amounts(bill(c, date(2026, 12, 1))) == [("subscription", "platform", "2715.83")]
    assert not isinstance(run(c, date(2026, 12, 26)), InvoiceDue)  # nothing more is due


def test_an_in_advance_period_is_billed_whole_at_its_start_an_amendment_known_ahead_too() -> None:
    # QA (helper-26, F1; helper-17 before): amended ahead from 12-25, December was billed only
    # to 12-25 on 12-01, the rest at the first run after 12-25 (contract.md: an in-advance
    # period is due once it starts).
    c = contract(subscription("310.00"), start=date(2026, 12, 1))
    c.amend(date(2026, 12, 25), (subscription("620.00"),), None, None, "m-1")
    assert amounts(bill(c, date(2026, 12, 1))) == [
        ("subscription", "platform", "240.00"),  # 24 days at 310.00 a month of 31
        ("subscription", "platform", "140.00")]  # 7 days at 620.00
    assert not isinstance(run(c, date(2026, 12, 26)), InvoiceDue)


def test_the_next_invoice_carries_the_proration_of_an_amendment_effective_later() -> None:
    # contract.md: "the next invoice carries a proration credit ... and a proration charge",
    # though the amendment takes effect after that invoice's cycle date.
    c = contract(subscription("310.00"), start=date(2026, 12, 1))
    bill(c, date(2026, 12, 1))
    c.amend(date(2026, 12, 25), (subscription("620.00"),), None, None, "m-1")
    assert amounts(bill(c, date(2026, 12, 11))) == [
        ("proration", "platform", "-70.00"), ("proration", "platform", "140.00")]


def test_a_plan_changed_to_a_new_component_is_billed_with_the_period_too() -> None:
    # QA (helper-28, F4): `pro`, new from 10-12, waited for a run on or after 10-12; received
    # after October was billed, the next invoice was a credit note with the credit alone.
    ahead = contract(subscription("100.00", "basic"), start=date(2026, 10, 1))
    ahead.amend(date(2026, 10, 12), (subscription("200.00", "pro"),), None, None, "m-1")
    assert amounts(bill(ahead, date(2026, 10, 1))) == [
        ("subscription", "basic", "35.48"), ("subscription", "pro", "129.03")]
    later = contract(subscription("100.00", "basic"), start=date(2026, 10, 1))
    bill(later, date(2026, 10, 1))
    later.amend(date(2026, 10, 12), (subscription("200.00", "pro"),), None, None, "m-1")
    assert sorted(amounts(bill(later, date(2026, 10, 10)))) == [
        ("proration", "basic", "-64.52"), ("subscription", "pro", "129.03")]


def test_the_in_arrears_days_of_a_period_made_in_advance_before_are_a_subscription_line() -> None:
    # QA (F6): in advance, then in arrears from 10-16 (known ahead): 10-16 to 11-01 is billed
    # for the first time on 11-01, a subscription line, though the period's in-advance part
    # was billed before it (contract.md: in_arrears periods are split at the effective date).
    c = contract(subscription("1000.00"), start=date(2026, 10, 1))
    c.amend(date(2026, 10, 16), (subscription("1000.00", timing="in_arrears"),), None, None, "m-1")
    assert amounts(bill(c, date(2026, 10, 1))) == [("subscription", "platform", "483.87")]
    due = bill(c, date(2026, 11, 1))
    assert amounts(due) == [("subscription", "platform", "516.13")]
    assert due.lines[0].description == (
        "platform: subscription 2026-10-16 to 2026-11-01 at 1000.00 per period, 16/31 days")


def test_the_in_arrears_days_of_a_period_made_in_advance_after_are_a_subscription_line() -> None:
    # QA (F6): in arrears, then in advance from 10-16 (known ahead): 10-16 to 11-01 is billed
    # on 10-01, 10-01 to 10-16 once it is served, each for the first time.
    c = contract(subscription("1000.00", timing="in_arrears"), start=date(2026, 10, 1))
    c.amend(date(2026, 10, 16), (subscription("1000.00"),), None, None, "m-1")
    assert amounts(bill(c, date(2026, 10, 1))) == [("subscription", "platform", "516.13")]
    due = bill(c, date(2026, 11, 1))
    assert amounts(due) == [
        ("subscription", "platform", "483.87"),  # October's in-arrears days
        ("subscription", "platform", "1000.00")]  # November, in advance
    assert due.lines[0].description == (
        "platform: subscription 2026-10-01 to 2026-10-16 at 1000.00 per period, 15/31 days")


def test_a_charge_that_replaces_billed_days_stays_a_proration() -> None:
    # The charge of an amendment received after its period was billed in part covers days
    # billed before (credited) and days never billed: one line, a proration, as it changes
    # what was billed (one charge per owed stretch keeps the period's lines to the cent).
    c = contract(subscription("1000.00"), start=date(2026, 10, 1))
    c.amend(date(2026, 10, 16), (subscription("1000.00", timing="in_arrears"),), None, None, "m-1")
    bill(c, date(2026, 10, 1))
    # Received after: in advance at 2000.00 from 10-11, the in-arrears days included.
    c.amend(date(2026, 10, 11), (subscription("2000.00"),), None, None, "m-2")
    c.amend(date(2026, 10, 16), (subscription("2000.00"),), None, None, "m-3")
    assert amounts(bill(c, date(2026, 10, 12))) == [
        ("proration", "platform", "-161.29"),  # 10-11 to 10-16 at 1000.00, as billed
        ("proration", "platform", "1354.84")]  # 10-11 to 11-01 at 2000.00
