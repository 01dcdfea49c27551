"""Billing rules of contract.md section 2, one scenario each."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from domain.billing import BillingContext, Held, NothingDue
from domain.billing_run import ContractOutcome
from domain.billing_runs import decide
from domain.money import AmountOutOfRange, digits_beyond_range, format_money, round_money
from domain.terms import Package, PerUnit, Volume
from tests.unit.billing_fixtures import (
    FakeUsage,
    amounts,
    at,
    bill,
    contract,
    graduated,
    milestone,
    run,
    subscription,
    usage,
)


def test_in_advance_subscription_is_billed_on_the_period_start() -> None:
    c = contract(subscription("1000.00"))
    due = bill(c, date(2026, 10, 1))
    assert amounts(due) == [("subscription", "platform", "1000.00")]
    assert due.lines[0].period_start == date(2026, 10, 1)
    assert due.lines[0].period_end == date(2026, 11, 1)
    assert due.due_date == date(2026, 10, 31)


def test_the_same_cycle_date_again_bills_nothing() -> None:
    c = contract(subscription("1000.00"))
    bill(c, date(2026, 10, 1))
    outcome = run(c, date(2026, 10, 1))
    assert outcome == NothingDue(next_due=date(2026, 11, 1))


def test_a_missed_run_catches_up_every_period_due() -> None:
    c = contract(subscription("100.00"))
    due = bill(c, date(2026, 12, 1))
    assert [(ln.period_start.month, str(ln.amount)) for ln in due.lines] == [
        (10, "100.00"), (11, "100.00"), (12, "100.00")]


def test_a_period_cut_short_by_the_start_date_is_prorated_by_calendar_days() -> None:
    c = contract(subscription("310.00"), start=date(2026, 10, 11), anchor=date(2026, 10, 1))
    due = bill(c, date(2026, 10, 11))
    assert amounts(due) == [("subscription", "platform", "210.00")]  # 21 of 31 days


def test_month_end_anchor_uses_the_last_day_then_the_anchor_day_again() -> None:
    c = contract(subscription("100.00"), start=date(2026, 1, 31))
    due = bill(c, date(2026, 3, 31))
    assert [(ln.period_start, ln.period_end) for ln in due.lines] == [
        (date(2026, 1, 31), date(2026, 2, 28)),
        (date(2026, 2, 28), date(2026, 3, 31)),
        (date(2026, 3, 31), date(2026, 4, 30)),
    ]


def test_in_arrears_subscription_is_billed_when_the_period_ends() -> None:
    c = contract(subscription("300.00", timing="in_arrears"))
    assert isinstance(run(c, date(2026, 10, 31)), NothingDue)
    assert amounts(bill(c, date(2026, 11, 1))) == [("subscription", "platform", "300.00")]


def test_quarterly_and_annual_periods() -> None:
    q = contract(subscription("900.00"), frequency="quarterly")
    assert bill(q, date(2026, 10, 1)).lines[0].period_end == date(2027, 1, 1)
    a = contract(subscription("12000.00"), frequency="annual")
    assert bill(a, date(2026, 10, 1)).lines[0].period_end == date(2027, 10, 1)
    assert isinstance(run(a, date(2027, 9, 30)), NothingDue)


def test_amendment_of_a_billed_in_advance_period_credits_old_and_charges_new() -> None:
    c = contract(subscription("3100.00"))
    bill(c, date(2026, 10, 1))
    c.amend(date(2026, 10, 21), (subscription("6200.00"),), None, None, "m-2")
    due = bill(c, date(2026, 11, 1))
    assert amounts(due) == [
        ("subscription", "platform", "6200.00"),  # November at the new price
        ("proration", "platform", "-1100.00"),  # 11 unused days of 31 at 3100
        ("proration", "platform", "2200.00"),  # the same 11 days at 6200
    ]


def test_amendment_splits_an_in_arrears_period_at_the_effective_date() -> None:
    c = contract(subscription("3100.00", timing="in_arrears"))
    c.amend(date(2026, 10, 11), (subscription("6200.00", timing="in_arrears"),), None, None, "m")
    due = bill(c, date(2026, 11, 1))
    assert amounts(due) == [
        ("subscription", "platform", "1000.00"),
        ("subscription", "platform", "4200.00"),
    ]


def test_termination_credits_the_unused_days_of_a_billed_in_advance_period() -> None:
    c = contract(subscription("3100.00"))
    bill(c, date(2026, 10, 1))
    c.terminate(date(2026, 10, 22), "m-t")
    due = bill(c, date(2026, 10, 22))
    assert amounts(due) == [("proration", "platform", "-1000.00")]
    assert due.total < 0
    assert run(c, date(2027, 1, 1)) == NothingDue(next_due=None)


def test_no_period_starting_on_or_after_the_end_date_is_billed() -> None:
    c = contract(subscription("100.00"), end=date(2026, 11, 1))
    due = bill(c, date(2026, 12, 1))
    assert [ln.period_start.month for ln in due.lines] == [10]


def test_usage_is_billed_in_arrears_with_graduated_tiers() -> None:
    api = usage(pricing=graduated(("1000", "0", "0"), (None, "0.002", "0")))
    c = contract(subscription("1000.00"), api)
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "1500")
    meter.add(at(date(2026, 10, 31)), "1000")
    bill(c, date(2026, 10, 1), meter)
    due = bill(c, date(2026, 11, 1), meter)
    assert ("usage", "api", "3.00") in amounts(due)  # 1500 units above the free 1000
    line = next(ln for ln in due.lines if ln.kind == "usage")
    assert line.quantity == Decimal(2500)
    assert line.basis["events"] == 2


def test_a_usage_line_with_zero_quantity_is_a_zero_amount_line() -> None:
    c = contract(usage(pricing=Package(Decimal(100), Decimal(5))))
    due = bill(c, date(2026, 11, 1))
    assert amounts(due) == [("usage", "api", "0.00")]


def test_volume_pricing_prices_all_units_at_the_reached_tier() -> None:
    tiers = Volume(graduated(("100", "1", "0"), (None, "0.5", "10")).tiers)
    c = contract(usage(pricing=tiers))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "200")
    assert amounts(bill(c, date(2026, 11, 1), meter)) == [("usage", "api", "110.00")]


def test_minimum_true_up_adds_the_difference() -> None:
    c = contract(usage(minimum="50.00"))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "1000")  # 10.00 of usage
    assert amounts(bill(c, date(2026, 11, 1), meter)) == [
        ("usage", "api", "10.00"), ("minimum_true_up", "api", "40.00")]


def test_a_minimum_is_prorated_for_a_period_cut_short_like_any_period_amount() -> None:
    # contract.md, Periods: a period cut short by start_date or end_date is prorated by
    # calendar days; the minimum is a period's amount too.
    c = contract(usage(minimum="31.00"), start=date(2026, 10, 11), anchor=date(2026, 10, 1),
                 end=date(2026, 11, 11))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 15)), "500")  # 5.00 of usage
    october = bill(c, date(2026, 11, 1), meter)
    assert amounts(october) == [
        ("usage", "api", "5.00"), ("minimum_true_up", "api", "16.00")]  # 31 x 21/31 - 5
    assert october.lines[1].basis["prorated_minimum"] == "21.00"
    november = bill(c, date(2026, 11, 11), meter)  # ends on the 11th: 10 of 30 days
    assert amounts(november) == [
        ("usage", "api", "0.00"), ("minimum_true_up", "api", "10.33")]


def test_late_usage_is_billed_on_the_next_invoice_as_the_price_difference() -> None:
    api = usage(pricing=graduated(("1000", "0", "0"), (None, "0.01", "0")))
    c = contract(subscription("100.00"), api)
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "1500")
    bill(c, date(2026, 10, 1), meter)
    bill(c, date(2026, 11, 1), meter)
    meter.add(at(date(2026, 10, 30)), "700")  # arrives after October was invoiced
    due = bill(c, date(2026, 12, 1), meter)
    assert ("late_usage", "api", "7.00") in amounts(due)
    late = next(ln for ln in due.lines if ln.kind == "late_usage")
    assert (late.period_start, late.period_end) == (date(2026, 10, 1), date(2026, 11, 1))


def test_late_usage_lowers_a_minimum_true_up_already_billed() -> None:
    c = contract(usage(minimum="50.00"))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "1000")
    bill(c, date(2026, 11, 1), meter)
    meter.add(at(date(2026, 10, 6)), "3000")  # +30.00, late
    assert amounts(bill(c, date(2026, 12, 1), meter)) == [
        ("usage", "api", "0.00"),  # November, no usage
        ("late_usage", "api", "30.00"),
        ("minimum_true_up", "api", "-30.00"),
        ("minimum_true_up", "api", "50.00"),  # November's minimum
    ]


def test_incomplete_usage_holds_the_whole_invoice_with_a_reason() -> None:
    c = contract(subscription("100.00"), usage())
    watermark = datetime(2026, 10, 30, tzinfo=UTC)
    outcome = run(c, date(2026, 11, 1), watermarks={"api_calls": watermark})
    assert isinstance(outcome, Held)
    assert "api_calls" in outcome.reason
    assert "2026-10-30" in outcome.reason and "2026-11-01" in outcome.reason
    complete = datetime(2026, 11, 1, tzinfo=UTC)
    assert len(bill(c, date(2026, 11, 1), watermarks={"api_calls": complete}).lines) == 3


def test_late_usage_of_an_invoiced_period_waits_for_an_incomplete_watermark() -> None:
    # A new source declares usage complete only through 10-15 after October was invoiced, and
    # the terms price no usage from November: a run that skipped October's late usage would
    # still issue an invoice, moving the usage revision past it, and it would never be billed.
    c = contract(subscription("100.00", timing="in_arrears"), usage(pricing=PerUnit(Decimal(1))))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "7")
    bill(c, date(2026, 11, 1), meter)
    c.amend(date(2026, 11, 1), (subscription("100.00", timing="in_arrears"),), None, None, "m-a")
    meter.add(at(date(2026, 10, 20)), "3")  # late
    behind = {"api_calls": datetime(2026, 10, 15, tzinfo=UTC)}
    outcome = run(c, date(2026, 12, 1), meter, behind)
    assert isinstance(outcome, Held) and "watermark 2026-10-15" in outcome.reason
    complete = {"api_calls": datetime(2026, 12, 1, tzinfo=UTC)}
    assert ("late_usage", "api", "3.00") in amounts(bill(c, date(2026, 12, 1), meter, complete))


def test_progressive_billing_bills_usage_to_date_when_the_threshold_is_reached() -> None:
    c = contract(usage(pricing=PerUnit(Decimal(1))), threshold="500.00")
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 3)), "300")
    assert isinstance(run(c, date(2026, 10, 10), meter), NothingDue)
    meter.add(at(date(2026, 10, 12)), "300")
    early = bill(c, date(2026, 10, 15), meter)
    assert amounts(early) == [("usage", "api", "600.00")]
    assert early.lines[0].period_end == date(2026, 10, 15)
    meter.add(at(date(2026, 10, 20)), "50")
    final = bill(c, date(2026, 11, 1), meter)
    assert amounts(final) == [("usage", "api", "50.00")]  # only the rest


def test_milestones_are_billed_once_completed() -> None:
    c = contract(subscription("100.00"), milestone())
    bill(c, date(2026, 10, 1))
    c.complete_milestone("go_live", date(2026, 10, 20), "m-ms")
    assert isinstance(run(c, date(2026, 10, 19)), NothingDue)
    assert amounts(bill(c, date(2026, 10, 20))) == [("milestone", "golive", "5000.00")]


def test_rounding_half_up_per_line_to_the_currency_minor_units() -> None:
    jpy = contract(usage(pricing=PerUnit(Decimal("0.5"))), currency="JPY")
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "3")
    assert amounts(bill(jpy, date(2026, 11, 1), meter)) == [("usage", "api", "2")]
    kwd = contract(usage(pricing=PerUnit(Decimal("0.0005"))), currency="KWD")
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "3")
    assert amounts(bill(kwd, date(2026, 11, 1), meter)) == [("usage", "api", "0.002")]


def test_amounts_are_shown_as_rounded_by_the_one_rounding_rule() -> None:
    # Half-up everywhere, the string format's half-even never: 2.5 JPY shows as 3, not 2.
    assert [format_money(Decimal(a), c) for a, c in (("2.5", "JPY"), ("0.125", "USD"),
                                                    ("-0.0005", "KWD"), ("7", "EUR"))] == [
        "3", "0.13", "-0.001", "7.00"]


def test_decimals_in_range_are_below_10_to_the_15_with_at_most_12_places() -> None:
    # Counted on the value, however it is written.
    for fine in ("0", "0.000", "0012.50", "100", "999999999999999.999999999999",
                 "1.000000000000000000", "0.000000000001"):
        assert digits_beyond_range(Decimal(fine)) is None, fine
    assert digits_beyond_range(Decimal("1000000000000000")) == (
        "has more than 15 digits before the decimal point")
    assert digits_beyond_range(Decimal("0.0000000000001")) == (
        "has more than 12 digits after the decimal point")


def test_an_amount_beyond_the_precision_is_refused_not_rounded() -> None:
    # Inputs in range whose product has more digits than Decimal's 28: the contract fails its
    # run with the reason, never an amount rounded somewhere other than round_money.
    c = contract(usage(pricing=PerUnit(Decimal("999999999999999.999999999999"))))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "999999999999999")
    with pytest.raises(AmountOutOfRange, match=r"1\.000000E\+30 USD has more digits than "
                       r"billcycle computes to the minor unit \(28 significant digits\)"):
        bill(c, date(2026, 11, 1), meter)
    assert round_money(Decimal("1234567890123456789012345.6785"), "KWD") == Decimal(
        "1234567890123456789012345.679")  # 28 digits: still rounded
    with pytest.raises(AmountOutOfRange):
        round_money(Decimal("1234567890123456789012345678.9"), "USD")


def test_a_failure_to_price_names_the_component_metric_period_and_quantity() -> None:
    # QA14 L3: a contract with several components failed naming none of them.
    huge = PerUnit(Decimal("999999999999999.999999999999"))
    c = contract(subscription("10.00"), usage(pricing=huge))
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "999999999999999")
    failed = decide(c, BillingContext(date(2026, 11, 1), {}, meter.position), meter)
    assert isinstance(failed, ContractOutcome) and failed.reason == (
        "could not price: api: usage of metric api_calls 2026-10-01 to 2026-11-01, quantity "
        "999999999999999, per_unit pricing: 1.000000E+30 USD has more digits than billcycle "
        "computes to the minor unit (28 significant digits); check the quantities and prices "
        "that make it (AmountOutOfRange)")
    seats = subscription("999999999999999.99", quantity="999999999999999")
    with pytest.raises(AmountOutOfRange, match=r"^platform: subscription 2026-10-01 to "
                       r"2026-11-01 at 9\.99\d+E\+29 per period \(quantity 999999999999999 x "
                       r"999999999999999\.99\): 1\.000000E\+30 USD has more digits"):
        bill(contract(seats), date(2026, 10, 1))


def test_usage_periods_follow_the_contract_timezone() -> None:
    c = contract(usage(pricing=PerUnit(Decimal(1))), timezone="Asia/Tokyo")
    meter = FakeUsage()
    meter.add(datetime(2026, 10, 31, 14, 30, tzinfo=UTC), "1")  # Nov 1 23:30 in Tokyo
    meter.add(datetime(2026, 10, 31, 15, 30, tzinfo=UTC), "10")  # Nov 1 00:30 in Tokyo
    due = bill(c, date(2026, 11, 1), meter)
    assert amounts(due) == [("usage", "api", "1.00")]


def test_unique_count_counts_distinct_property_values() -> None:
    c = contract(usage(aggregation="unique_count", unique_property="user",
                       pricing=PerUnit(Decimal(2))))
    meter = FakeUsage()
    for user in ["a", "b", "a", "c"]:
        meter.add(at(date(2026, 10, 5)), "1", user=user)
    assert amounts(bill(c, date(2026, 11, 1), meter)) == [("usage", "api", "6.00")]


def test_a_contract_with_due_lines_gets_an_invoice_even_at_zero_total() -> None:
    c = contract(subscription("0.00"))
    due = bill(c, date(2026, 10, 1))
    assert due.total == 0 and len(due.lines) == 1


def test_a_replayed_contract_has_the_billed_state_the_run_applied() -> None:
    # The run applies its settlement in memory; a reload parses the Invoiced events' records.
    api = usage(pricing=graduated(("1000", "0", "0"), (None, "0.01", "0")), minimum="20.00")
    c = contract(subscription("100.00"), subscription("9.50", "seats", "in_arrears", "3"), api)
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "1500")
    bill(c, date(2026, 10, 1), meter)
    bill(c, date(2026, 11, 1), meter)
    meter.add(at(date(2026, 10, 30)), "700")
    bill(c, date(2026, 12, 1), meter)
    replayed: Any = None
    for event in c.collect_events():
        replayed = event.mutate(replayed)
    assert replayed.billed == c.billed
    assert replayed.last_invoice == c.last_invoice
    assert replayed.billed.usage and replayed.billed.subscriptions and replayed.billed.true_ups
