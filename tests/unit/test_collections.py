"""Collections: the schedule an invoice starts, payments that end it, actions recorded once."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from domain.collections import (
    Collection,
    CollectionPolicy,
    InvalidPolicy,
    Payment,
    UnknownStep,
    collection_id,
)
from projections.collections import DueAction, Listing, still_standing

DUE = date(2026, 12, 1)
AT = datetime(2026, 12, 20, tzinfo=UTC)


def started(amount: str = "100.00", policy: CollectionPolicy | None = None) -> Collection:
    return Collection(
        invoice_number="INV-000001", customer_id="cus_1", contract_id="ct_1", currency="USD",
        amount=Decimal(amount), due_date=DUE,
        steps=(policy or CollectionPolicy()).schedule(DUE),
    )


def test_the_default_schedule_is_two_reminders_and_a_final_notice() -> None:
    c = started()
    assert c.id == collection_id("INV-000001")
    assert [(s["step"], s["due_on"]) for s in c.steps] == [
        ("reminder+7", "2026-12-08"), ("reminder+14", "2026-12-15"),
        ("final_notice+30", "2026-12-31"),
    ]


def test_actions_fall_due_on_their_day_and_are_recorded_once() -> None:
    c = started()
    assert c.due(date(2026, 12, 7)) == []
    assert [s["step"] for s in c.due(date(2026, 12, 15))] == ["reminder+7", "reminder+14"]
    c.record_action("reminder+7", date(2026, 12, 15))
    c.record_action("reminder+7", date(2026, 12, 16))
    assert [s["step"] for s in c.due(date(2026, 12, 15))] == ["reminder+14"]
    assert len([e for e in c.collect_events() if type(e).__name__ == "ActionRecorded"]) == 1


def test_a_part_payment_keeps_the_schedule_and_the_settling_payment_ends_it() -> None:
    c = started()
    c.note_payment("p1", Decimal("60.00"), AT)
    assert c.ended is None and c.outstanding == Decimal("40.00")
    c.note_payment("p2", Decimal("40.00"), AT)
    c.note_payment("p2", Decimal("40.00"), AT)
    assert c.ended == "paid"
    assert c.due(date(2027, 1, 31)) == []
    names = [type(e).__name__ for e in c.collect_events()]
    assert names == ["Started", "PaymentNoted", "PaymentNoted", "Ended"]


def test_refunds_are_noted_so_that_outstanding_is_the_invoices_balance() -> None:
    # QA F8: the repro's order. Refunds pay back only what was paid beyond the invoice, so
    # they come after the collection ended; noted, its figure follows the invoice's balance
    # (total - paid + refunded) and a payment noted after the end says what is held then.
    c = started("77.77")
    c.note_payment("q1", Decimal("100.00"), AT)
    assert (c.ended, c.outstanding) == ("paid", Decimal("-22.23"))
    c.note_refund("rq1", Decimal("22.23"), AT)
    assert c.outstanding == Decimal("0.00")
    c.note_payment("q0", Decimal("50.00"), AT)  # dated earlier, read later
    assert c.outstanding == Decimal("-50.00")
    c.note_refund("rq2", Decimal("50.00"), AT)
    c.note_refund("rq2", Decimal("50.00"), AT)  # read again: no change
    assert (c.ended, c.outstanding) == ("paid", Decimal("0.00"))
    assert c.due(date(2027, 1, 31)) == []
    assert [type(e).__name__ for e in c.collect_events()] == [
        "Started", "PaymentNoted", "Ended", "RefundNoted", "PaymentNoted", "RefundNoted"]


def start_after(*payments: tuple[str, str]) -> Collection:
    return Collection.start(
        invoice_number="INV-000001", customer_id="cus_1", contract_id="ct_1", currency="USD",
        amount=Decimal("100.00"), due_date=DUE, steps=CollectionPolicy().schedule(DUE),
        paid_before=[Payment(pid, Decimal(amount), AT) for pid, amount in payments],
    )


def test_a_collection_started_after_a_payment_starts_with_it_applied() -> None:
    c = start_after(("p1", "60.00"))
    assert c.outstanding == Decimal("40.00") and c.ended is None
    c.note_payment("p1", Decimal("60.00"), AT)  # the same payment, read again: no change
    assert c.outstanding == Decimal("40.00")
    assert [type(e).__name__ for e in c.collect_events()] == ["Started"]


def test_a_collection_started_after_the_settling_payment_ends_at_once() -> None:
    c = start_after(("p1", "60.00"), ("p2", "40.00"), ("p3", "5.00"))
    assert c.outstanding == Decimal("-5.00") and c.ended == "paid"
    events: list[Any] = list(c.collect_events())
    assert [type(e).__name__ for e in events] == ["Started", "Ended"]
    assert events[1].payment_id == "p2"  # the one that settled it


def test_an_action_not_on_the_schedule_is_refused() -> None:
    with pytest.raises(UnknownStep, match="reminder\\+7, reminder\\+14"):
        started().record_action("phone_call+3", DUE)


def test_a_policy_is_read_from_text() -> None:
    policy = CollectionPolicy.parse("final_notice:45, reminder:3")
    assert [s.step_id for s in policy.steps] == ["reminder+3", "final_notice+45"]
    with pytest.raises(InvalidPolicy, match="KIND:DAYS"):
        CollectionPolicy.parse("reminder:soon")
    with pytest.raises(InvalidPolicy, match="repeats"):
        CollectionPolicy.parse("reminder:3,reminder:3")


def test_a_policy_reads_back_from_its_text() -> None:
    for policy in (CollectionPolicy(), CollectionPolicy.parse("final_notice:30,reminder:3")):
        assert CollectionPolicy.parse(policy.text()) == policy


def reminder(number: str, outstanding: int, credited: int = 0) -> DueAction:
    return DueAction(number, "cus_1", "ct_1", "USD", outstanding, "2026-12-01", "reminder+7",
                     "reminder", "2026-12-08", customer_owes=outstanding, credited=credited)


def test_only_actions_that_still_stand_are_recorded_for_a_past_day() -> None:
    # QA L4: as of 12-10 four invoices were due a reminder; by the books' last day one is
    # unchanged, one paid, one part paid, one settled by a later credit note and one reminded.
    then = Listing([reminder(f"INV-00000{n}", 10000) for n in range(1, 6)], [],
                   {f"INV-00000{n}": 10000 for n in range(1, 6)})
    now = Listing([reminder("INV-000001", 10000), reminder("INV-000003", 4000)],
                  [reminder("INV-000004", 10000, credited=10000)],
                  {"INV-000001": 10000, "INV-000003": 4000, "INV-000004": 10000,
                   "INV-000005": 10000})
    record, changed = still_standing(then, now, date(2026, 12, 10))
    assert [a.number for a in record] == ["INV-000001"]
    assert [(a.number, why) for a, why in changed] == [
        ("INV-000002", "paid since 2026-12-10: nothing is open on it now"),
        ("INV-000003", "to collect 40.00 now, not 100.00: payments, refunds or credit notes "
                       "dated after 2026-12-10"),
        ("INV-000004", "withheld now: credit notes or customer credit dated after 2026-12-10 "
                       "cover it"),
        ("INV-000005", "recorded as sent after 2026-12-10"),
    ]
