"""Refunds (an extension of contract.md: `refund.paid`): money paid back of what a document
holds for its customer, a credit note's amount or paid beyond what an invoice owed, by the
refund's day; more is refused with what is held (domain/invoice.py: Invoice.pay_refund)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from eventsourcing.persistence import ProcessRecorder, Tracking

from domain.application import BillingApplication
from domain.collections import Collection, CollectionPolicy, Payment
from infra.store.url import store_env
from tests.e2e.cli import billcycle, billcycle_json, jsonl
from tests.e2e.test_cli_billing import PLATFORM, contract
from tests.e2e.test_payments_by_date import aging, november_credited, paid
from tests.store_sql import on_store
from tests.unit.test_kafka_outbound import publisher, validate


def refund(rid: str, number: str, amount: str, when: str) -> dict[str, Any]:
    return {"type": "refund.paid", "id": rid, "occurred_at": when, "invoice_number": number,
            "amount": amount, "currency": "USD"}


def test_an_overpayment_is_paid_back_up_to_what_was_paid_beyond_the_invoice(db: str) -> None:
    billcycle(db, "ingest", "-", stdin=jsonl(contract("ct_r", PLATFORM)))
    billcycle(db, "run", "--cycle-date", "2026-10-01")  # INV-000001, 1000.00
    billcycle(db, "ingest", "-", stdin=jsonl(
        paid("p-1", "INV-000001", "1200.00", "2026-10-05T09:00:00Z")))
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(
        refund("r-early", "INV-000001", "10.00", "2026-10-03T09:00:00Z"),  # before the payment
        refund("r-1", "INV-000001", "150.00", "2026-10-10T09:00:00Z"),
        refund("r-2", "INV-000001", "100.00", "2026-10-11T09:00:00Z")))  # 50.00 left
    assert ingested["accepted"] == 1
    assert [r["reason"] for r in ingested["rejected"]] == [
        "refund.paid r-early: 10.00 USD is more than INV-000001 holds for cus_ct_r on 2026-10-03 "
        "(0.00 USD: what was paid beyond what it owed, less refunds dated by then); check the "
        "document number, the amount and the date",
        "refund.paid r-2: 100.00 USD is more than INV-000001 holds for cus_ct_r on 2026-10-11 "
        "(50.00 USD: what was paid beyond what it owed, less refunds dated by then); check the "
        "document number, the amount and the date"]
    assert aging(db, "2026-10-07")["USD"]["customer_credit"] == "200.00"
    assert aging(db, "2026-10-12")["USD"]["customer_credit"] == "50.00"
    [invoice] = billcycle_json(db, "invoices")
    # helper-28 (F5): the listing says what was paid back, so that it adds up.
    assert (invoice["paid"], invoice["refunded"], invoice["balance"]) == (
        "1200.00", "150.00", "-50.00")
    journal = billcycle(db, "export", "beancount").stdout
    assert "refund r-1 to cus_ct_r on INV-000001" in journal


def test_a_credit_note_paid_back_no_longer_settles_the_customers_invoices(db: str) -> None:
    november_credited(db)
    assert [i["number"] for i in aging(db, "2026-11-20")["USD"]["items"]] == ["INV-000002"]
    billcycle(db, "ingest", "-", stdin=jsonl(
        refund("r-cn", "INV-000003", "1000.00", "2026-11-25T09:00:00Z")))
    # Paid back in cash, the credit note settles nothing: October's invoice is open again.
    assert [i["number"] for i in aging(db, "2026-11-26")["USD"]["items"]] == [
        "INV-000001", "INV-000002"]
    assert aging(db, "2026-11-26")["USD"]["total"] == "2000.00"
    assert aging(db, "2026-11-26")["USD"]["customer_credit"] == "0.00"


def test_refunds_arriving_out_of_date_order_draw_on_the_credit_note_in_date_order(
    db: str,
) -> None:
    # QA (helper-28, F1 HIGH): the one dated earlier, arriving later, was refused; taken in
    # arrival order it would also have drawn on customer credit before the payment made it.
    november_credited(db)  # INV-000003: a credit note of -1000.00, issued 11-15
    billcycle(db, "ingest", "-", stdin=jsonl(
        paid("p-cn", "INV-000003", "200.00", "2026-11-20T09:00:00Z")))  # customer credit
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(
        refund("r-late", "INV-000003", "1100.00", "2026-11-28T09:00:00Z"),
        refund("r-early", "INV-000003", "100.00", "2026-11-18T09:00:00Z")))
    assert (ingested["accepted"], ingested["rejected"]) == (2, [])
    credit = {day: aging(db, day)["USD"]["customer_credit"]
              for day in ("2026-11-19", "2026-11-21", "2026-11-29")}
    assert credit == {"2026-11-19": "0.00", "2026-11-21": "200.00", "2026-11-29": "0.00"}
    assert aging(db, "2026-11-29")["USD"]["total"] == "2000.00"  # October and November
    assert "r-late to cus_ct_t on INV-000003 reapplied: r-early, dated earlier" in billcycle(
        db, "export", "beancount").stdout


def relayed(db: str) -> list[dict[str, Any]]:
    """What `billcycle publish` puts on billing.invoices, in log order (a stand-in producer),
    each message valid by its schema."""
    app = BillingApplication(env=store_env(db))
    try:
        topic: list[Any] = []
        publisher(app, topic, [], page_size=50).run(until_caught_up=True)
    finally:
        app.close()
    messages = [validate("invoice-event", value) for _, value, _ in topic]
    for message, (_, value, _) in zip(messages, topic, strict=True):
        validate(message["type"], value)
    return messages


def collected_invoice(db: str, contract_id: str) -> None:
    """INV-000001 of 77.77, issued on 2026-12-01, and its collection started."""
    billcycle(db, "ingest", "-", stdin=jsonl(contract(
        contract_id, {**PLATFORM, "amount": "77.77"}, start_date="2026-12-01")))
    billcycle(db, "run", "--cycle-date", "2026-12-01")
    billcycle(db, "project")


def test_collection_messages_state_the_invoices_balance_as_payments_and_refunds_arrive(
    db: str,
) -> None:
    # QA F8: the collection noted payments only. Read after all four, it said q1 left
    # -22.23 (the invoice was then at 0.00, rq1 paid back) and q0, noted after it ended,
    # -72.23: downstream read 72.23 owed back to the customer, where all was paid back.
    collected_invoice(db, "ct_n1")
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(
        paid("q1", "INV-000001", "100.00", "2026-12-10T09:00:00Z"),
        refund("rq1", "INV-000001", "22.23", "2026-12-12T09:00:00Z"),
        paid("q0", "INV-000001", "50.00", "2026-12-05T09:00:00Z"),  # dated first, arrives late
        refund("rq2", "INV-000001", "50.00", "2026-12-11T09:00:00Z")))
    assert (ingested["accepted"], ingested["rejected"]) == (4, [])
    billcycle(db, "project")  # the collections process reads the four in one page

    messages = relayed(db)

    said = [(m["type"], m.get("payment_id") or m.get("refund_id"),
             m["outstanding"] if m["type"].startswith("collection.") else m.get("balance"))
            for m in messages]
    assert said == [
        ("invoice.issued", None, None),
        ("collection.started", None, "77.77"),
        ("payment.applied", "q1", "-22.23"),
        ("refund.applied", "rq1", "0.00"),
        ("payment.applied", "q0", "-50.00"),
        ("refund.applied", "rq2", "0.00"),
        ("collection.payment_noted", "q1", "-22.23"),
        ("collection.ended", "q1", "-22.23"),
        ("collection.refund_noted", "rq1", "0.00"),
        # Noted after the collection ended: what the invoice then held for the customer.
        ("collection.payment_noted", "q0", "-50.00"),
        ("collection.refund_noted", "rq2", "0.00"),
    ]
    [invoice] = billcycle_json(db, "invoices")
    assert invoice["balance"] == said[-1][2]
    assert billcycle_json(db, "collections", "--as-of", "2027-02-01")["actions"] == []


def test_collection_rows_an_earlier_billcycle_wrote_without_refunded_are_read_as_none(
    db: str,
) -> None:
    # QA10 (F2): an earlier billcycle's `project --follow`, still running when this one rebuilt
    # the view with its `refunded` column, wrote rows without it; `collections` then failed
    # on the NULL (a TypeError) until the view was replayed by hand.
    collected_invoice(db, "ct_n2")
    on_store(db, "UPDATE collections SET refunded = NULL")  # as the earlier one wrote them

    [action, *_] = billcycle_json(db, "collections", "--as-of", "2027-02-01")["actions"]
    assert action["outstanding"] == "77.77"
    billcycle(db, "ingest", "-", stdin=jsonl(
        paid("q1", "INV-000001", "100.00", "2026-12-10T09:00:00Z"),
        refund("rq1", "INV-000001", "22.23", "2026-12-12T09:00:00Z")))
    billcycle(db, "project")  # the refund noted on the row without refunded
    assert billcycle_json(db, "collections", "--as-of", "2027-02-01")["actions"] == []
    assert [m["outstanding"] for m in relayed(db)
            if m["type"] == "collection.refund_noted"] == ["0.00"]


def collected_by_an_earlier_billcycle(db: str) -> None:
    """INV-000001 of 77.77 paid 100.00 (q1) and 22.23 refunded (rq1), its collection kept by
    the process of a billcycle before refunds were noted: started, ended by q1, and tracked
    as `billcycle:collections` through the end of the log, past rq1."""
    billcycle(db, "ingest", "-", stdin=jsonl(contract(
        "ct_old", {**PLATFORM, "amount": "77.77"}, start_date="2026-12-01")))
    billcycle(db, "run", "--cycle-date", "2026-12-01")
    billcycle(db, "ingest", "-", stdin=jsonl(
        paid("q1", "INV-000001", "100.00", "2026-12-10T09:00:00Z"),
        refund("rq1", "INV-000001", "22.23", "2026-12-12T09:00:00Z")))
    [issued] = billcycle_json(db, "invoices")
    due = date.fromisoformat(issued["due_date"])
    app = BillingApplication(env=store_env(db))
    try:
        earlier = f"{app.name}:collections"
        recorder = cast(ProcessRecorder, app.recorder)
        collection = Collection.start(
            invoice_number="INV-000001", customer_id="cus_ct_old", contract_id="ct_old",
            currency="USD", amount=Decimal("77.77"), due_date=due,
            steps=CollectionPolicy().schedule(due), paid_before=[
                Payment("q1", Decimal("100.00"), datetime.fromisoformat("2026-12-10T09:00Z"))])
        app.save_tracked(collection, tracking=Tracking(
            earlier, recorder.max_notification_id() or 0))
        # Its next pass found nothing to do, and moved on to the end of the log.
        recorder.insert_tracking(Tracking(earlier, recorder.max_notification_id() or 0))
    finally:
        app.close()


def test_refunds_the_earlier_collections_process_read_past_are_noted_by_the_first_project(
    db: str,
) -> None:
    # QA10 F5: upgraded with nothing new logged, `project` left the refund unnoted (the
    # collection still said -22.23 outstanding) until something new came, and counted nothing.
    collected_by_an_earlier_billcycle(db)

    first = billcycle_json(db, "project")
    again = billcycle_json(db, "project")

    assert first["collections_process"]["events"] == 1  # rq1
    assert again["collections_process"]["events"] == 0  # noted once
    assert [(m["type"], m.get("refund_id"), m["outstanding"]) for m in relayed(db)
            if m["type"].startswith("collection.")] == [
        ("collection.started", None, "-22.23"), ("collection.ended", None, "-22.23"),
        ("collection.refund_noted", "rq1", "0.00")]
    assert "\ncollections process: at log position " in billcycle(db, "project").stdout
