"""The AR journal: issue, credit note, payment and recognition entries."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from domain.ledger import (
    Account,
    Document,
    DocumentPayment,
    EntryKind,
    JournalEntry,
    Posting,
    UnbalancedEntry,
    applied_by_date,
    as_of_recognition,
    balances,
    cash_entry,
    document_entries,
    issue_entry,
    posting_day,
    reapplication_entry,
    reapplied_by,
)
from domain.recognition import Schedule

D = Decimal
NOV1 = date(2026, 11, 1)


def doc(*schedules: Schedule, number: str = "INV-000001", kind: str = "invoice") -> Document:
    return Document(number, kind, "cus_1", "ct_1", "USD", NOV1, schedules)


def ratable(amount: str, start: date, end: date, issued: date = NOV1) -> Schedule:
    return Schedule(D(amount), "USD", issued, start, end)


def test_an_invoice_defers_what_is_not_yet_earned() -> None:
    subscription = ratable("1000.00", NOV1, date(2026, 12, 1))
    usage = ratable("5.00", date(2026, 10, 1), NOV1)
    entry = issue_entry(doc(subscription, usage))
    assert dict((p.account, p.amount) for p in entry.postings) == {
        Account.RECEIVABLE: D("1005.00"),
        Account.REVENUE: D("-38.33"),  # usage in full, one day of the subscription
        Account.DEFERRED_REVENUE: D("-966.67"),
    }


def test_a_credit_note_reverses_receivable_and_deferred_revenue() -> None:
    credit = ratable("-300.00", date(2026, 11, 16), date(2026, 12, 1))
    entry = issue_entry(doc(credit, kind="credit_note"))
    assert dict((p.account, p.amount) for p in entry.postings) == {
        Account.RECEIVABLE: D("-300.00"), Account.DEFERRED_REVENUE: D("300.00"),
    }
    assert entry.narration.startswith("credit note")


def test_the_close_moves_deferred_revenue_to_revenue_month_by_month() -> None:
    annual = ratable("1200.00", NOV1, date(2027, 11, 1))
    entries = document_entries(doc(annual))
    assert len(entries) == 1 + 12  # issue, then Nov 30 .. Sep 30 month ends and Oct 31
    totals = balances(entries, date(2027, 10, 31))
    assert totals[("USD", Account.REVENUE)] == D("-1200.00")
    assert ("USD", Account.DEFERRED_REVENUE) not in totals or \
        totals[("USD", Account.DEFERRED_REVENUE)] == 0


def test_an_as_of_entry_brings_revenue_to_a_mid_month_date() -> None:
    d = doc(ratable("1000.00", NOV1, date(2026, 12, 1)))
    as_of = date(2026, 11, 15)
    extra = as_of_recognition(d, as_of)
    assert extra is not None
    totals = balances([*document_entries(d), extra], as_of)
    assert -totals[("USD", Account.REVENUE)] == d.recognized(as_of) == D("500.00")
    assert as_of_recognition(d, date(2026, 11, 30)) is None  # a close date already


def test_a_payment_settles_the_receivable_and_the_excess_is_customer_credit() -> None:
    d = doc(ratable("100.00", NOV1, date(2026, 12, 1)))
    pay = DocumentPayment("pay-1", date(2026, 11, 20), 1, D("130.00"), D(0))
    part = applied_by_date(d.total, [pay])["pay-1"]
    assert part == D("100.00")
    paid = cash_entry(d, EntryKind.PAYMENT, "pay-1", pay.amount, pay.day, part)
    assert dict((p.account, p.amount) for p in paid.postings) == {
        Account.CASH: D("130.00"), Account.RECEIVABLE: D("-100.00"),
        Account.CUSTOMER_CREDIT: D("-30.00"),
    }


def test_a_payment_dated_before_the_invoice_is_posted_on_the_issue_date() -> None:
    received = datetime(2026, 10, 20, 12, tzinfo=UTC)
    assert posting_day(received, "UTC", NOV1) == NOV1
    assert posting_day(received, "UTC", date(2026, 10, 1)) == date(2026, 10, 20)


def test_payments_settle_a_document_in_the_order_of_their_days_however_they_arrive() -> None:
    late = DocumentPayment("pay-late", date(2026, 11, 20), 7, D("80.00"), D("80.00"))
    early = DocumentPayment("pay-early", date(2026, 11, 5), 9, D("50.00"), D(0))
    same_day = DocumentPayment("pay-same", date(2026, 11, 20), 8, D("40.00"), D(0))
    assert applied_by_date(D("100.00"), [late, early, same_day]) == {
        "pay-early": D("50.00"), "pay-late": D("50.00"), "pay-same": D(0)}
    # A credit note owes nothing: every payment on it is customer credit.
    assert applied_by_date(D("-20.00"), [late]) == {"pay-late": D(0)}


def test_a_payment_arriving_late_says_which_payments_dated_after_it_give_way() -> None:
    # What payment.applied relays: the ledger's parts once it is applied, and the payments
    # whose part it changed (each gets a reapplication entry).
    late = DocumentPayment("pay-late", date(2026, 11, 20), 7, D("80.00"), D(0))
    later = DocumentPayment("pay-later", date(2026, 11, 25), 8, D("10.00"), D(0))
    early = DocumentPayment("pay-early", date(2026, 11, 5), 9, D("50.00"), D(0))
    parts, changed = reapplied_by(D("100.00"), [late, later, early], "pay-early")
    assert parts == {"pay-early": D("50.00"), "pay-late": D("50.00"), "pay-later": D(0)}
    assert changed == [late, later]
    # Dated last, it changes nothing.
    assert reapplied_by(D("100.00"), [late, later], "pay-later")[1] == []

def test_a_reapplication_moves_the_difference_to_customer_credit_on_the_payments_day() -> None:
    d = doc(ratable("100.00", NOV1, date(2026, 12, 1)))
    late = DocumentPayment("pay-late", date(2026, 11, 20), 7, D("80.00"), D("80.00"))
    entry = reapplication_entry(d, EntryKind.PAYMENT, late, D("50.00"), "pay-early")
    assert entry.day == date(2026, 11, 20)
    assert dict((p.account, p.amount) for p in entry.postings) == {
        Account.RECEIVABLE: D("30.00"), Account.CUSTOMER_CREDIT: D("-30.00")}
    assert entry.entry_id == "INV-000001/payment/pay-late/reapplied/pay-early"


def test_a_refund_takes_a_credit_notes_open_amount_first_then_customer_credit() -> None:
    credit = doc(ratable("-100.00", NOV1, date(2026, 12, 1)), kind="credit_note")
    entry = cash_entry(credit, EntryKind.REFUND, "r-1", D("130.00"), date(2026, 11, 20),
                       D("100.00"))
    assert dict((p.account, p.amount) for p in entry.postings) == {
        Account.CASH: D("-130.00"), Account.RECEIVABLE: D("100.00"),
        Account.CUSTOMER_CREDIT: D("30.00")}
    assert (entry.kind, entry.entry_id) == (EntryKind.REFUND, "INV-000001/refund/r-1")
    # Of an invoice (nothing negative open), customer credit alone.
    paid = cash_entry(doc(ratable("100.00", NOV1, date(2026, 12, 1))), EntryKind.REFUND, "r-2",
                      D("20.00"), date(2026, 11, 20), D(0))
    assert {p.account for p in paid.postings} == {Account.CASH, Account.CUSTOMER_CREDIT}



def test_refunds_draw_on_a_credit_note_in_the_order_of_their_days() -> None:
    late = DocumentPayment("r-late", date(2026, 11, 25), 7, D("100.00"), D("100.00"))
    early = DocumentPayment("r-early", date(2026, 11, 10), 9, D("50.00"), D(0))
    assert applied_by_date(D("100.00"), [late, early]) == {
        "r-early": D("50.00"), "r-late": D("50.00")}
    credit = doc(ratable("-100.00", NOV1, date(2026, 12, 1)), kind="credit_note")
    entry = reapplication_entry(credit, EntryKind.REFUND, late, D("50.00"), "r-early")
    assert entry.day == date(2026, 11, 25)
    assert dict((p.account, p.amount) for p in entry.postings) == {
        Account.RECEIVABLE: D("-50.00"), Account.CUSTOMER_CREDIT: D("50.00")}


def test_an_unbalanced_entry_cannot_exist() -> None:
    with pytest.raises(UnbalancedEntry, match="sum to 1"):
        JournalEntry("x", NOV1, issue_entry(doc()).kind, "INV-1", "cus_1", "USD", "",
                     (Posting(Account.CASH, D(1)),))
