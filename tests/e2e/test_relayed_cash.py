"""Payments and refunds as billing.invoices relays them, seen by an accounting system fed only
by that topic (QA9): every amount with the currency's minor units, and each dated by the day
the ledger posts it (`posted_on`), which the UTC instants alone do not give."""

from __future__ import annotations

from typing import Any

from tests.e2e.cli import billcycle, billcycle_json, jsonl
from tests.e2e.test_cli_billing import PLATFORM, contract
from tests.e2e.test_payments_by_date import paid
from tests.e2e.test_refunds import relayed


def refund(rid: str, number: str, amount: str, when: str, currency: str) -> dict[str, Any]:
    return {"type": "refund.paid", "id": rid, "occurred_at": when, "invoice_number": number,
            "amount": amount, "currency": currency}


def book(db: str) -> list[dict[str, Any]]:
    """A USD contract in UTC, a JPY one in Tokyo and a KWD one in New York, invoiced on
    2026-10-01, their collections started, then paid (and overpaid and refunded) with amounts
    written as producers write them: "600" USD, "50000.0" JPY, "39.13" KWD. The messages
    relayed, in log order."""
    billcycle(db, "ingest", "-", stdin=jsonl(
        contract("ct_us", PLATFORM),
        contract("ct_jp", {**PLATFORM, "amount": "100000"}, currency="JPY",
                 timezone="Asia/Tokyo"),
        contract("ct_kw", {**PLATFORM, "amount": "300.000"}, currency="KWD",
                 timezone="America/New_York")))
    billcycle(db, "run", "--cycle-date", "2026-10-01")
    billcycle(db, "project")  # the collections start
    number = {i["contract_id"]: i["number"] for i in billcycle_json(db, "invoices")}
    us, jp, kw = number["ct_us"], number["ct_jp"], number["ct_kw"]
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(
        paid("pay-us", us, "600", "2026-10-05T09:00:00Z"),
        paid("pay-us-2", us, "406.0", "2026-10-06T09:00:00Z"),  # 6.00 beyond the invoice
        refund("ref-us", us, "1", "2026-10-07T09:00:00Z", "USD"),
        paid("pay-early", jp, "50000.0", "2026-10-09T16:30:00Z", "JPY"),  # 10-10 in Tokyo
        paid("pay-kw", kw, "39.13", "2026-10-31T02:00:00Z", "KWD"),  # 10-30 in New York
        paid("pay-kw-2", kw, "300", "2026-10-31T12:00:00Z", "KWD"),  # 39.130 beyond it
        refund("ref-kw", kw, "9.13", "2026-11-01T03:00:00Z", "KWD")))  # 10-31 in New York
    assert (ingested["accepted"], ingested["rejected"]) == (7, [])
    billcycle(db, "project")  # the collections note the payments and refunds
    return relayed(db)


def test_every_relayed_amount_has_the_currencys_minor_units(db: str) -> None:
    # QA9 F2: payment, refund and collection amounts echoed the producer's notation ("600"
    # USD read as 6.00 by a consumer counting minor units from the digits, "39.13" KWD as
    # 3.913), and outstanding carried it into its arithmetic ("50000.0" JPY).
    messages = book(db)

    said = [(m["type"], m.get("payment_id") or m.get("refund_id"), m.get("amount"),
             m.get("outstanding", m.get("balance")))
            for m in messages if not m["type"].endswith(".issued")]
    assert said == [
        ("collection.started", None, "100000", "100000"),
        ("collection.started", None, "300.000", "300.000"),
        ("collection.started", None, "1000.00", "1000.00"),
        ("payment.applied", "pay-us", "600.00", "400.00"),
        ("payment.applied", "pay-us-2", "406.00", "-6.00"),
        ("refund.applied", "ref-us", "1.00", "-5.00"),
        ("payment.applied", "pay-early", "50000", "50000"),
        ("payment.applied", "pay-kw", "39.130", "260.870"),
        ("payment.applied", "pay-kw-2", "300.000", "-39.130"),
        ("refund.applied", "ref-kw", "9.130", "-30.000"),
        ("collection.payment_noted", "pay-us", "600.00", "400.00"),
        ("collection.payment_noted", "pay-us-2", "406.00", "-6.00"),
        ("collection.ended", "pay-us-2", None, "-6.00"),
        ("collection.refund_noted", "ref-us", "1.00", "-5.00"),
        ("collection.payment_noted", "pay-early", "50000", "50000"),
        ("collection.payment_noted", "pay-kw", "39.130", "260.870"),
        ("collection.payment_noted", "pay-kw-2", "300.000", "-39.130"),
        ("collection.ended", "pay-kw-2", None, "-39.130"),
        ("collection.refund_noted", "ref-kw", "9.130", "-30.000"),
    ]


def test_payments_and_refunds_are_relayed_with_the_day_the_ledger_posts_them(db: str) -> None:
    # QA9 F1: the ledger posts money on the contract's local day, but the messages carried
    # only the UTC instants and no timezone: a downstream's AR at 2026-10-09 (JPY) and
    # 2026-10-30 (KWD) disagreed with billcycle's.
    messages = book(db)

    posted = {m.get("payment_id") or m["refund_id"]: (m["posted_on"], m.get("received_at")
                                                       or m["paid_at"])
              for m in messages if m["type"] in ("payment.applied", "refund.applied")}
    assert posted == {
        "pay-us": ("2026-10-05", "2026-10-05T09:00:00Z"),
        "pay-us-2": ("2026-10-06", "2026-10-06T09:00:00Z"),
        "ref-us": ("2026-10-07", "2026-10-07T09:00:00Z"),
        "pay-early": ("2026-10-10", "2026-10-09T16:30:00Z"),  # Tokyo: the day after UTC
        "pay-kw": ("2026-10-30", "2026-10-31T02:00:00Z"),  # New York: the day before UTC
        "pay-kw-2": ("2026-10-31", "2026-10-31T12:00:00Z"),
        "ref-kw": ("2026-10-31", "2026-11-01T03:00:00Z"),
    }
    # The days billcycle's own books use: AR as the QA repro read it.
    assert billcycle_json(db, "report", "ar-aging", "--as-of", "2026-10-09")["JPY"][
        "total"] == "100000"
    assert billcycle_json(db, "report", "ar-aging", "--as-of", "2026-10-30")["KWD"][
        "total"] == "260.870"
    # The documents say in which timezone their contract's days are.
    zones = {m["contract_id"]: m["timezone"] for m in messages if m["type"] == "invoice.issued"}
    assert zones == {"ct_us": "UTC", "ct_jp": "Asia/Tokyo", "ct_kw": "America/New_York"}


def test_a_payment_received_before_the_issue_date_is_posted_on_the_issue_date(db: str) -> None:
    billcycle(db, "ingest", "-", stdin=jsonl(contract("ct_e", PLATFORM)))
    billcycle(db, "run", "--cycle-date", "2026-10-01")
    billcycle(db, "ingest", "-", stdin=jsonl(
        paid("pay-ahead", "INV-000001", "1000.00", "2026-09-28T09:00:00Z")))

    [payment] = [m for m in relayed(db) if m["type"] == "payment.applied"]

    assert (payment["received_at"], payment["posted_on"]) == ("2026-09-28T09:00:00Z",
                                                              "2026-10-01")
