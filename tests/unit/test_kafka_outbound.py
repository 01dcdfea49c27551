"""Outbound messages: invoice events become schema-valid messages, published in log order, each
once, resuming after what the topic holds (a fake transactional producer stands in for Kafka).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from eventsourcing.persistence import Tracking
from jsonschema import Draft202012Validator, FormatChecker
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from consumers.kafka_source import TOMBSTONE, KafkaIngest
from consumers.outbound import (
    PaymentApplied,
    RefundApplied,
    dead_letter,
    parse_invoice_message,
)
from consumers.patience import Patience
from consumers.publisher import InvoicePublisher
from consumers.schemas import SCHEMA_DIR
from domain.application import BillingApplication, dead_letter_record
from domain.collections import Collection, CollectionPolicy, Payment
from domain.commands import Origin, Rejected
from domain.invoice import Invoice
from infra.store.url import store_env
from projections.runner import Projections

DUE = date(2026, 12, 1)
AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def invoice(number: str, customer: str, total: str) -> Invoice:
    amount = Decimal(total)
    return Invoice(
        number=number, batch_id="B-1", cycle_date=date(2026, 11, 1), contract_id=f"ct_{customer}",
        customer_id=customer, currency="USD", issue_date=date(2026, 11, 1), due_date=DUE,
        document_type="credit_note" if amount < 0 else "invoice",
        lines=[{"component_id": "platform", "kind": "subscription", "description": "platform",
                "quantity": "0.0000001", "unit_amount": None, "amount": total,
                "period_start": "2026-11-01", "period_end": "2026-12-01", "basis": {}}],
        subtotals={"subscription": amount}, total=amount, contract_version=1,
    )


@pytest.fixture
def app() -> Iterator[BillingApplication]:
    application = BillingApplication(env=store_env("sqlite:///:memory:"))
    yield application
    application.close()


class FakeProducer:
    """Records committed transactions; `fail_on_commit` makes the next commit fail."""

    def __init__(self, topic: list[tuple[bytes, bytes, dict[str, bytes]]]) -> None:
        self.topic = topic
        self.pending: list[tuple[bytes, bytes, dict[str, bytes]]] = []
        self.fail_on_commit = False
        self.settling = 0.0  # seconds Kafka takes to end an earlier publisher's transaction

    def init_transactions(self) -> None:
        time.sleep(self.settling)
        self.pending = []

    def begin_transaction(self) -> None:
        self.pending = []

    def send(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.pending.append((key, value, dict(headers)))

    def commit_transaction(self) -> None:
        if self.fail_on_commit:
            self.fail_on_commit = False
            raise KafkaTimeoutError("commit timed out")
        self.topic.extend(self.pending)

    def close(self, timeout: float | None = None) -> None:
        pass


def publisher(app: BillingApplication, topic: list[Any], producers: list[FakeProducer],
              page_size: int = 2) -> InvoicePublisher:
    def make() -> FakeProducer:
        producers.append(FakeProducer(topic))
        return producers[-1]

    def resume() -> int:
        return max((int(h["log_position"]) for _, _, h in topic), default=0)

    patience = Patience(lambda _: None, threading.Event(), first=0.0)
    return InvoicePublisher(app, make, resume, "billing.invoices", patience, page_size=page_size)


def validate(name: str, value: bytes) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(value)
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    Draft202012Validator(schema, format_checker=FormatChecker()).validate(document)
    return document


def test_invoice_events_are_published_in_log_order_keyed_by_customer_and_valid(
    app: BillingApplication,
) -> None:
    first, credit = invoice("INV-000001", "cus_1", "105.50"), invoice("INV-000002", "cus_2", "-5")
    collection = Collection(invoice_number="INV-000001", customer_id="cus_1",
                            contract_id="ct_cus_1", currency="USD", amount=Decimal("105.50"),
                            due_date=DUE, steps=CollectionPolicy().schedule(DUE))
    app.save(first, credit, collection)
    first.apply_payment("pay-1", Decimal("105.50"), "USD", AT)
    collection.record_action("reminder+7", date(2026, 12, 8))
    collection.note_payment("pay-1", Decimal("105.50"), AT)
    app.save(first, collection)
    topic: list[Any] = []

    stats = publisher(app, topic, []).run(until_caught_up=True)

    kinds = [json.loads(v)["type"] for _, v, _ in topic]
    assert kinds == ["invoice.issued", "credit_note.issued", "collection.started",
                     "payment.applied", "collection.action_recorded",
                     "collection.payment_noted", "collection.ended"]
    assert stats.published == 7
    positions = [int(h["log_position"]) for _, _, h in topic]
    assert positions == sorted(positions)
    for key, value, headers in topic:
        document = validate(json.loads(value)["type"], value)
        validate("invoice-event", value)
        assert key.decode() == document["customer_id"]
        assert headers["event_id"].decode() == document["event_id"]
        assert parse_invoice_message(value).log_position == int(headers["log_position"])
    issued = json.loads(topic[0][1])
    assert issued["event_id"] == f"{first.id}:1"
    assert issued["total"] == "105.50" and issued["lines"][0]["quantity"] == "0.0000001"
    paid = json.loads(topic[3][1])
    assert (paid["amount"], paid["paid"], paid["balance"]) == ("105.50", "105.50", "0.00")
    noted = json.loads(topic[5][1])
    assert (noted["payment_id"], noted["amount"], noted["outstanding"]) == (
        "pay-1", "105.50", "0.00")
    assert json.loads(topic[6][1])["outstanding"] == "0.00"


def test_a_refund_is_relayed_with_the_documents_balance_after_it(app: BillingApplication) -> None:
    credit = invoice("INV-000002", "cus_2", "-5")
    app.save(credit)
    credit.pay_refund("ref-1", Decimal("5.00"), "USD", AT)
    app.save(credit)
    topic: list[Any] = []
    publisher(app, topic, []).run(until_caught_up=True)
    key, value, _ = topic[-1]
    refund = validate("refund.applied", value)
    validate("invoice-event", value)
    assert key == b"cus_2"
    assert (refund["refund_id"], refund["amount"], refund["refunded"], refund["balance"]) == (
        "ref-1", "5.00", "5.00", "0.00")


def collection_messages(app: BillingApplication, page_size: int) -> list[dict[str, Any]]:
    """The collections process caught up in pages of `page_size`, then everything published:
    the collection messages, in order."""
    Projections(app, ["collections"], page_size=page_size, parallel=False).catch_up()
    topic: list[Any] = []
    publisher(app, topic, [], page_size=50).run(until_caught_up=True)
    messages = [validate("invoice-event", value) for _, value, _ in topic]
    return [m for m in messages if m["type"].startswith("collection.")]


def test_a_collection_started_after_a_payment_states_what_is_still_unpaid(
    app: BillingApplication,
) -> None:
    # Paid in part before the collections process ran (QA F9): collection.started came after
    # payment.applied in the log with the invoice's whole total as outstanding.
    first = invoice("INV-000001", "cus_1", "201.00")
    app.save(first)
    first.apply_payment("pay-1", Decimal("50.00"), "USD", AT)
    app.save(first)

    messages = collection_messages(app, page_size=50)

    assert [(m["type"], m["amount"], m["outstanding"]) for m in messages] == [
        ("collection.started", "201.00", "151.00")]
    rows = Projections(app, ["collections"]).view("collections").select(
        "SELECT amount, paid, status FROM collections", [])
    assert [tuple(r) for r in rows] == [(20100, 5000, "open")]


def test_a_payment_the_collection_did_not_start_with_is_relayed_as_noted(
    app: BillingApplication,
) -> None:
    # The process read the invoice in one page and the payment (already in the log before
    # the collection started) in the next: the payment's noting corrects the figure.
    first = invoice("INV-000001", "cus_1", "201.00")
    app.save(first)
    first.apply_payment("pay-1", Decimal("50.00"), "USD", AT)
    first.apply_payment("pay-2", Decimal("151.00"), "USD", AT)
    app.save(first)

    messages = collection_messages(app, page_size=1)

    assert [(m["type"], m["outstanding"]) for m in messages] == [
        ("collection.started", "201.00"), ("collection.payment_noted", "151.00"),
        ("collection.payment_noted", "0.00"), ("collection.ended", "0.00")]


def test_refunds_the_process_read_past_before_it_noted_refunds_are_noted_on_its_next_page(
    app: BillingApplication,
) -> None:
    # A store whose collections process was of a billcycle that noted payments only (it
    # tracked as billcycle:collections): it ended the collection and read past the refund.
    first = invoice("INV-000001", "cus_1", "77.77")
    app.save(first)
    first.apply_payment("q1", Decimal("100.00"), "USD", AT)
    first.pay_refund("rq1", Decimal("22.23"), "USD", AT)
    app.save(first)
    passed = app.recorder.max_notification_id() or 0
    older = Collection.start(
        invoice_number="INV-000001", customer_id="cus_1", contract_id="ct_cus_1",
        currency="USD", amount=Decimal("77.77"), due_date=DUE,
        steps=CollectionPolicy().schedule(DUE), paid_before=[Payment("q1", Decimal("100"), AT)])
    app.save_tracked(older, tracking=Tracking(f"{app.name}:collections", passed))
    first.apply_payment("q0", Decimal("50.00"), "USD", AT - timedelta(days=5))
    app.save(first)

    messages = collection_messages(app, page_size=50)

    # The refund first, in log order: q0's figure is the invoice's balance after it.
    assert [(m["type"], m.get("payment_id") or m.get("refund_id"), m["outstanding"])
            for m in messages] == [
        ("collection.started", None, "-22.23"), ("collection.ended", "q1", "-22.23"),
        ("collection.refund_noted", "rq1", "0.00"), ("collection.payment_noted", "q0", "-50.00")]
    rows = Projections(app, ["collections"]).view("collections").select(
        "SELECT amount, paid, refunded, status FROM collections", [])
    assert [tuple(r) for r in rows] == [(7777, 15000, 2223, "ended")]


def test_a_failed_commit_starts_over_from_what_the_topic_holds(app: BillingApplication) -> None:
    app.save(*(invoice(f"INV-00000{n}", f"cus_{n}", "10") for n in range(1, 6)))
    topic: list[Any] = []
    producers: list[FakeProducer] = []
    relay = publisher(app, topic, producers, page_size=2)
    original_start = relay._start

    def start_failing_once() -> int:
        position = original_start()
        if len(producers) == 1:
            producers[0].fail_on_commit = True  # the first transaction is lost
        return position

    relay._start = start_failing_once  # type: ignore[method-assign]

    relay.run(until_caught_up=True)

    numbers = [json.loads(v)["number"] for _, v, _ in topic]
    assert numbers == [f"INV-00000{n}" for n in range(1, 6)]
    assert len(producers) == 2  # a new producer (fencing the old one) after the failure

    publisher(app, topic, []).run(until_caught_up=True)  # restarted: nothing new to send
    assert len(topic) == 5


def test_a_dead_letter_carries_the_source_position_and_the_original_bytes() -> None:
    rejected = Rejected(Origin("kafka:billing.usage/2", "offset 41", b"\xff not json"),
                        "not UTF-8", None)

    letter = dead_letter(dead_letter_record(rejected))

    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "billing.usage", 2, 41)
    assert letter.raw_encoding == "base64"
    validate("deadletter", letter.model_dump_json().encode())


def test_a_tombstone_and_an_empty_value_give_dead_letters_told_apart() -> None:
    # QA F11: both were "empty: ... (a Kafka tombstone has none)", raw "" in UTF-8.
    records = [SimpleNamespace(offset=n, value=value)
               for n, value in enumerate([None, b"", b"{}", None])]

    parsed = KafkaIngest._parse(TopicPartition("billing.usage", 2), records)

    letters = sorted((dead_letter(dead_letter_record(r)) for r in parsed.rejected),
                     key=lambda letter: letter.source_offset)
    assert [(letter.source_offset, letter.reason.partition(":")[0]) for letter in letters] == [
        (0, "tombstone"), (1, "empty"), (2, "message"), (3, "tombstone")]
    assert letters[0].reason == TOMBSTONE and "null" in TOMBSTONE
    assert "not a null one" in letters[1].reason
    for letter in letters:
        assert (letter.raw, letter.raw_encoding) == ("", "utf-8") or letter.source_offset == 2
        validate("deadletter", letter.model_dump_json().encode())


def test_cash_messages_relayed_before_the_ledgers_split_still_validate() -> None:
    # posted_on, to_receivable, to_customer_credit and reapplied (from_... on refunds) are
    # additive: messages already on the topic lack them.
    old: dict[str, str | int] = {
        "type": "payment.applied", "event_id": "x:2", "log_position": 3,
        "occurred_at": "2026-10-05T09:00:00Z", "invoice_id": "x", "number": "INV-000001",
        "contract_id": "ct_1", "customer_id": "cus_1", "currency": "USD", "payment_id": "pay-1",
        "amount": "600.00", "received_at": "2026-10-05T09:00:00Z", "paid": "600.00",
        "balance": "400.00"}
    refund = {**{k: v for k, v in old.items() if k not in ("payment_id", "received_at",
                                                          "paid")},
              "type": "refund.applied", "refund_id": "r-1", "paid_at": old["received_at"],
              "refunded": "1.00"}
    for message in (old, refund):
        raw = json.dumps(message).encode()
        validate("invoice-event", raw)
        validate(str(message["type"]), raw)
        parsed = parse_invoice_message(raw)
        assert isinstance(parsed, PaymentApplied | RefundApplied)
        assert (parsed.posted_on, parsed.reapplied) == (None, None)


def test_a_start_held_back_by_an_earlier_publishers_transaction_says_so(
    app: BillingApplication,
) -> None:
    said: list[str] = []
    patience = Patience(said.append, threading.Event(), slow=0.2)

    def make() -> FakeProducer:
        producer = FakeProducer([])
        producer.settling = 0.3  # a publisher killed mid-transaction: Kafka aborts it first
        return producer

    publisher = InvoicePublisher(app, make, lambda: 0, "billing.invoices", patience,
                                 kafka="Kafka at k:9092", transactional_id="billcycle-pub")
    publisher.run(until_caught_up=True)
    patience.stop.set()

    assert said[0] == ("waiting for Kafka at k:9092 to end the transaction an earlier publisher "
                       "of transactional id billcycle-pub left open (aborted, or its commit "
                       "completed) and fence that publisher off: 0s so far"), said
    assert not any("no answer" in s for s in said), said
