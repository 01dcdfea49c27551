"""The publisher killed with SIGKILL mid-stream and restarted, several times: every invoice event
is on billing.invoices exactly once, in log order along each partition."""

from __future__ import annotations

import io
import json
import random
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from eventsourcing.utils import get_topic

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from domain.billing_runs import BillingRuns
from domain.invoice import Invoice
from infra.store.url import store_env
from tests.integration.book import many_contracts
from tests.integration.kafka_support import (
    billcycle_json,
    cli_env,
    kill,
    more_than,
    new_topics,
    read_topic,
    start,
    wait_for,
)

CONTRACTS = 120


def bill_a_book(db: str) -> list[str]:
    """Invoices for a book of contracts, a payment on every third; the event ids, in log order."""
    app = BillingApplication(env=store_env(db))
    try:
        pipeline = IngestPipeline(app)
        pipeline.process_lines(io.BytesIO(many_contracts(CONTRACTS)), "book")
        run = BillingRuns(app, lambda: datetime(2026, 11, 1, tzinfo=UTC)).run(date(2026, 11, 1))
        payments = b"".join(
            json.dumps({"type": "payment.received", "id": f"pay-{i.number}",
                        "occurred_at": "2026-11-20T09:00:00Z", "invoice_number": i.number,
                        "amount": str(i.total), "currency": "USD"}).encode() + b"\n"
            for i in run.invoices[::3]
        )
        pipeline.process_lines(io.BytesIO(payments), "payments")
        events: Any = Invoice
        topics = [get_topic(events.InvoiceIssued), get_topic(events.PaymentApplied)]
        notifications = app.recorder.select_notifications(1, 10_000, topics=topics)
        return [f"{n.originator_id}:{n.originator_version}" for n in notifications]
    finally:
        app.close()


def test_a_publisher_killed_mid_stream_and_restarted_publishes_every_event_once_in_order(
    kafka_bootstrap: str, fresh_pg_url: str, tmp_path: Path
) -> None:
    expected = bill_a_book(fresh_pg_url)
    assert len(expected) == CONTRACTS + CONTRACTS // 3
    topics = new_topics(kafka_bootstrap)
    env = cli_env(fresh_pg_url, kafka_bootstrap, topics)
    log = str(tmp_path / "publish.log")
    rng = random.Random(11)

    def on_topic() -> int:
        return len(read_topic(kafka_bootstrap, topics.invoices))

    mid_stream = 0
    for _ in range(3):
        before = on_topic()
        # Small transactions, so that a kill lands between and inside them.
        publisher = start(env, "publish", "--page-size", "3", log=log)
        wait_for(more_than(on_topic, before), 60, "the publisher to publish")
        time.sleep(rng.uniform(0, 0.5))
        kill(publisher)
        mid_stream += on_topic() < len(expected)
    finished = billcycle_json(env, "publish", "--until-caught-up")

    assert mid_stream >= 2
    assert finished["resumed_after_log_position"] > 0
    records = read_topic(kafka_bootstrap, topics.invoices)
    published = [dict(r.headers)["event_id"].decode() for r in records]
    assert sorted(published) == sorted(expected)  # every event, and each once
    by_partition: dict[int, list[int]] = {}
    for record in records:
        message = json.loads(record.value)
        assert record.key.decode() == message["customer_id"]
        by_partition.setdefault(record.partition, []).append(message["log_position"])
    for positions in by_partition.values():
        assert positions == sorted(positions)  # log order along each partition
    messages = [json.loads(r.value) for r in records]
    paid = [m for m in messages if m["type"] == "payment.applied"]
    assert len(paid) == CONTRACTS // 3 and all(Decimal(p["balance"]) == 0 for p in paid)
