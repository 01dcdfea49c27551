"""Payments settle a document in the order of their dates, whatever order they arrive in
(contract.md: messages on different topics arrive in any order): AR aging at any date agrees
with the payments dated by then, and the journal says when a payment was reapplied
(domain/ledger.py: applied_by_date, reapplication_entry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.cli import billcycle, billcycle_json, jsonl
from tests.e2e.test_cli_billing import PLATFORM, contract


def paid(pid: str, number: str, amount: str, when: str, currency: str = "USD"
         ) -> dict[str, Any]:
    return {"type": "payment.received", "id": pid, "occurred_at": when,
            "invoice_number": number, "amount": amount, "currency": currency}


def aging(db: str, as_of: str) -> dict[str, Any]:
    found: dict[str, Any] = billcycle_json(db, "report", "ar-aging", "--as-of", as_of,
                                          "--detail")
    return found


def test_a_payment_dated_earlier_settles_the_invoice_first_whenever_it_arrives(
    db: str, tmp_path: Path
) -> None:
    # QA (helper-24, F2): the one dated 10-20 arrived first and was applied; the one dated
    # 10-05 was then all customer credit, so on 10-12 the invoice looked open and overdue
    # though the customer had paid it a week before its due date.
    billcycle(db, "ingest", "-", stdin=jsonl(contract("ct_b", PLATFORM, payment_terms_days=10)))
    billcycle(db, "run", "--cycle-date", "2026-10-01")  # INV-000001, 1000.00, due 10-11
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(
        paid("pb-late", "INV-000001", "1000.00", "2026-10-20T09:00:00Z"),
        paid("pb-early", "INV-000001", "1000.00", "2026-10-05T09:00:00Z")))
    # The note names the payment the ledger holds as credit: the one dated later.
    assert ingested["notes"] == [
        "payment pb-early of 1000.00 USD on INV-000001, dated 2026-10-05, settles it before the "
        "payments dated later; held as the customer's credit now: 1000.00 USD of payment "
        "pb-late; check the invoice number and the amount"]

    assert aging(db, "2026-10-04")["USD"]["total"] == "1000.00"
    assert aging(db, "2026-10-12") == {}  # paid by then, and nothing beyond what it owed
    after = aging(db, "2026-10-20")["USD"]
    assert (after["total"], after["customer_credit"]) == ("0.00", "1000.00")

    # The journal: pb-late settled it, then is reapplied on its own day when pb-early arrives.
    exported = billcycle(db, "export", "beancount").stdout
    assert ('payment pb-late from cus_ct_b on INV-000001 reapplied: pb-early, dated earlier, '
            'settles the document first') in exported
    assert "2026-10-20 * " in exported


def test_a_currency_with_customer_credit_only_is_in_the_aging(db: str) -> None:
    # QA (helper-24, F1): its credit was in the text report but missing from --json.
    billcycle(db, "ingest", "-", stdin=jsonl(contract("ct_k", PLATFORM, currency="KWD")))
    billcycle(db, "run", "--cycle-date", "2026-10-01")
    billcycle(db, "ingest", "-", stdin=jsonl(
        paid("pk-1", "INV-000001", "1001.000", "2026-10-05T09:00:00Z", "KWD")))
    assert aging(db, "2026-10-10") == {"KWD": {
        "current": "0.000", "1-30": "0.000", "31-60": "0.000", "61-90": "0.000", "90+": "0.000",
        "total": "0.000", "customer_credit": "1.000", "items": []}}


def test_every_currency_in_the_aging_has_customer_credit_even_when_none_is_held(db: str) -> None:
    # QA (qa14, L1): customer_credit was left out when zero, breaking d[c]["customer_credit"].
    billcycle(db, "ingest", "-", stdin=jsonl(*(
        contract(f"ct_{c.lower()}", PLATFORM, currency=c) for c in ("USD", "JPY", "KWD"))))
    billcycle(db, "run", "--cycle-date", "2026-10-01")
    assert {c: b["customer_credit"] for c, b in aging(db, "2026-10-10").items()} == {
        "JPY": "0", "KWD": "0.000", "USD": "0.00"}
    # The text stays quiet on credit nobody holds.
    assert "customer credit" not in billcycle(db, "report", "ar-aging", "--as-of",
                                              "2026-10-10").stdout


def november_credited(db: str) -> None:
    """Invoices of 1000.00 for October (INV-000001, due 10-31) and November (INV-000002, due
    12-01), then service ended on 11-01, received later: November comes back as a credit
    note (INV-000003, -1000.00, issued 11-15)."""
    billcycle(db, "ingest", "-", stdin=jsonl(contract("ct_t", PLATFORM)))
    billcycle(db, "run", "--cycle-date", "2026-10-01")
    billcycle(db, "run", "--cycle-date", "2026-11-01")
    billcycle(db, "ingest", "-", stdin=jsonl({
        "type": "contract.terminated", "id": "t-1", "occurred_at": "2026-11-10T00:00:00Z",
        "contract_id": "ct_t", "end_date": "2026-11-01"}))
    billcycle(db, "run", "--cycle-date", "2026-11-15")


def test_a_credit_note_settles_the_customers_oldest_open_invoice_in_the_aging(db: str) -> None:
    # November's credit note settles October's invoice, overdue, rather than sitting in
    # "current" beside it.
    november_credited(db)
    usd = aging(db, "2026-12-05")["USD"]
    assert (usd["current"], usd["1-30"], usd["31-60"], usd["total"]) == (
        "0.00", "1000.00", "0.00", "1000.00")
    [item] = usd["items"]
    assert (item["number"], item["open"], item["credited"]) == ("INV-000002", "1000.00", "0.00")
    text = billcycle(db, "report", "ar-aging", "--as-of", "2026-12-05", "--detail").stdout
    assert "credit notes settle" in text
    # Before the credit note was issued, October's invoice was open and overdue.
    assert [i["number"] for i in aging(db, "2026-11-14")["USD"]["items"]] == [
        "INV-000001", "INV-000002"]
    # Paid after all, October's invoice leaves the credit note to settle November's.
    billcycle(db, "ingest", "-", stdin=jsonl(
        paid("p-oct", "INV-000001", "1000.00", "2026-12-06T09:00:00Z")))
    assert aging(db, "2026-12-07") == {}
    assert [i["number"] for i in aging(db, "2026-12-05")["USD"]["items"]] == ["INV-000002"]
