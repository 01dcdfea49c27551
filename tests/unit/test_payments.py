"""Payments on a document: each applied once, and what pays beyond the open amount is said."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from domain.invoice import Invoice, PaymentRejected

PAID_ON = datetime(2026, 12, 5, tzinfo=UTC)


def document(total: str, currency: str = "USD") -> Invoice:
    kind = "credit_note" if Decimal(total) < 0 else "invoice"
    issued = Invoice.issued("INV-000007", "B1", date(2026, 12, 1), "ct_1", "cus_1", currency,
                            date(2026, 12, 1), date(2026, 12, 31), kind, [], {},
                            Decimal(total), 1)
    invoice: Invoice = issued.mutate(None)
    return invoice


def test_payments_up_to_the_open_amount_say_nothing() -> None:
    invoice = document("1005.00")
    assert invoice.apply_payment("p1", Decimal("1000.00"), "USD", PAID_ON) is None
    assert invoice.apply_payment("p2", Decimal("5.00"), "USD", PAID_ON) is None
    assert invoice.balance == 0 and invoice.open_amount() == 0


def test_a_payment_beyond_the_open_amount_is_named_with_the_credit_it_leaves() -> None:
    invoice = document("1005.00")
    invoice.apply_payment("p1", Decimal("1000.00"), "USD", PAID_ON)
    note = invoice.apply_payment("p2", Decimal("25.00"), "USD", PAID_ON)
    assert note == ("payment p2 of 25.00 USD on INV-000007, which still owed 5.00 USD: 20.00 "
                    "USD is held as the customer's credit; check the invoice number and the "
                    "amount")
    assert invoice.balance == Decimal("-20.00")  # the ledger keeps it as customer credit
    assert invoice.apply_payment("p2", Decimal("25.00"), "USD", PAID_ON) is None  # once


def test_a_payment_on_a_credit_note_is_all_credit() -> None:
    note = document("-600", "JPY").apply_payment("p1", Decimal("5"), "JPY", PAID_ON)
    assert note is not None and "INV-000007, which owed nothing: 5 JPY is held" in note


def test_a_payment_in_another_currency_is_refused() -> None:
    with pytest.raises(PaymentRejected, match="send the payment in USD"):
        document("10.00").apply_payment("p1", Decimal("10.00"), "EUR", PAID_ON)


def test_a_payment_dated_before_one_applied_settles_first_and_the_other_is_the_credit() -> None:
    # QA (helper-24, F2 left): the note named the payment that arrived last as the credit,
    # where the ledger, applying payments in the order of their days, holds the other's.
    invoice = document("100.00")
    assert invoice.apply_payment("p-late", Decimal("100.00"), "USD",
                                 datetime(2026, 12, 20, tzinfo=UTC)) is None
    note = invoice.apply_payment("p-early", Decimal("100.00"), "USD",
                                 datetime(2026, 12, 5, tzinfo=UTC))
    assert note == ("payment p-early of 100.00 USD on INV-000007, dated 2026-12-05, settles it "
                    "before the payments dated later; held as the customer's credit now: "
                    "100.00 USD of payment p-late; check the invoice number and the amount")


def test_payments_are_dated_in_the_contracts_timezone() -> None:
    # 16:00 UTC on 12-05 is 01:00 on 12-06 in Tokyo, the day of the payment before it (01:00
    # UTC on 12-06): the same day, so the order they arrived in decides, as in the ledger.
    invoice = document("100.00")
    invoice.apply_payment("p-1", Decimal("100.00"), "USD",
                          datetime(2026, 12, 6, 1, 0, tzinfo=UTC), "Asia/Tokyo")
    note = invoice.apply_payment("p-2", Decimal("100.00"), "USD",
                                 datetime(2026, 12, 5, 16, 0, tzinfo=UTC), "Asia/Tokyo")
    assert note is not None and note.startswith("payment p-2 of 100.00 USD on INV-000007, "
                                                "which owed nothing: 100.00 USD is held")


def test_a_refund_pays_back_what_the_document_holds_for_the_customer_by_its_day() -> None:
    invoice = document("100.00")
    invoice.apply_payment("p-1", Decimal("130.00"), "USD", datetime(2026, 12, 10, tzinfo=UTC))
    with pytest.raises(PaymentRejected, match=r"holds for cus_1 on 2026-12-09 \(0.00 USD"):
        invoice.pay_refund("r-0", Decimal("1.00"), "USD", datetime(2026, 12, 9, tzinfo=UTC))
    invoice.pay_refund("r-1", Decimal("20.00"), "USD", datetime(2026, 12, 11, tzinfo=UTC))
    invoice.pay_refund("r-1", Decimal("20.00"), "USD", datetime(2026, 12, 11, tzinfo=UTC))  # once
    with pytest.raises(PaymentRejected, match=r"\(10.00 USD: what was paid beyond"):
        invoice.pay_refund("r-2", Decimal("10.01"), "USD", datetime(2026, 12, 12, tzinfo=UTC))
    assert (invoice.refunded, invoice.balance) == (Decimal("20.00"), Decimal("-10.00"))


def test_a_credit_notes_amount_can_be_paid_back() -> None:
    credit = document("-600", "JPY")
    credit.pay_refund("r-1", Decimal("600"), "JPY", PAID_ON)
    assert credit.balance == 0
    with pytest.raises(PaymentRejected, match=r"its credit and what was paid beyond"):
        credit.pay_refund("r-2", Decimal("1"), "JPY", PAID_ON)
    with pytest.raises(PaymentRejected, match="send the refund in JPY"):
        credit.pay_refund("r-3", Decimal("1"), "USD", PAID_ON)


def test_a_refund_dated_before_one_paid_already_is_checked_on_its_own_day_and_theirs() -> None:
    # QA (helper-28, F1 HIGH): a refund dated 10-10 that arrived after one dated 10-25 was
    # refused as if that one were paid before it ("holds 0.00 on 2026-10-10").
    invoice = document("1000.00")
    invoice.apply_payment("p-1", Decimal("1500.00"), "USD", datetime(2026, 12, 5, tzinfo=UTC))
    invoice.apply_payment("p-2", Decimal("300.00"), "USD", datetime(2026, 12, 20, tzinfo=UTC))
    invoice.pay_refund("r-2", Decimal("500.00"), "USD", datetime(2026, 12, 25, tzinfo=UTC))
    invoice.pay_refund("r-1", Decimal("300.00"), "USD", datetime(2026, 12, 10, tzinfo=UTC))
    assert invoice.refunded == Decimal("800.00")
    # On 12-10 the document holds 500.00 less r-1's 300.00, but on 12-25 all 800.00 is paid
    # back: one more refund dated 12-10 would leave r-2 short.
    with pytest.raises(PaymentRejected, match=r"on 2026-12-25 \(0.00 USD.*\(a refund dated "
                                              r"2026-12-25 needs the rest\)"):
        invoice.pay_refund("r-3", Decimal("100.00"), "USD", datetime(2026, 12, 10, tzinfo=UTC))
