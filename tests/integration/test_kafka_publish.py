"""The publisher killed with SIGKILL mid-stream and restarted, several times: every invoice event
is on billing.invoices exactly once, in log order along each partition. A Kafka never reached
fails `publish --until-caught-up` (QA15 M2), and a publisher stopped before it reached Kafka
does not say it resumed after log position 0 (L7)."""

from __future__ import annotations

import io
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from eventsourcing.utils import get_topic
from kafka.admin import KafkaAdminClient

from consumers.kafka_source import Topics
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
    mentions,
    new_topics,
    read_topic,
    start,
    wait_for,
)

CONTRACTS = 450
ROUNDS = 3
# What a publisher says once it has fenced the one before and read where to resume.
RESUMING = "billcycle publish: publishing to "
_INVOICE: Any = Invoice
PUBLISHED = [get_topic(_INVOICE.InvoiceIssued), get_topic(_INVOICE.PaymentApplied)]


def book_slices() -> list[bytes]:
    """The book's contracts and usage, in one slice per round."""
    slices: list[list[bytes]] = [[] for _ in range(ROUNDS)]
    for line in many_contracts(CONTRACTS).splitlines(keepends=True):
        customer = int(json.loads(line)["customer_id"].removeprefix("cus_"))
        slices[customer % ROUNDS].append(line)
    return [b"".join(lines) for lines in slices]


def bill_a_slice(app: BillingApplication, book: bytes, name: str) -> None:
    """The slice's contracts billed for October, and a payment of every third invoice."""
    pipeline = IngestPipeline(app)
    pipeline.process_lines(io.BytesIO(book), name)
    run = BillingRuns(app, lambda: datetime(2026, 11, 1, tzinfo=UTC)).run(date(2026, 11, 1))
    payments = b"".join(
        json.dumps({"type": "payment.received", "id": f"pay-{i.number}",
                    "occurred_at": "2026-11-20T09:00:00Z", "invoice_number": i.number,
                    "amount": str(i.total), "currency": "USD"}).encode() + b"\n"
        for i in run.invoices[::3]
    )
    pipeline.process_lines(io.BytesIO(payments), f"{name}-payments")


def published_events(app: BillingApplication) -> list[str]:
    """The ids of the events the publisher publishes, in log order."""
    notifications = app.recorder.select_notifications(1, 10_000, topics=PUBLISHED)
    return [f"{n.originator_id}:{n.originator_version}" for n in notifications]


def test_a_publisher_killed_mid_stream_and_restarted_publishes_every_event_once_in_order(
    kafka_bootstrap: str, fresh_pg_url: str, tmp_path: Path
) -> None:
    app = BillingApplication(env=store_env(fresh_pg_url))
    topics = new_topics(kafka_bootstrap)
    env = cli_env(fresh_pg_url, kafka_bootstrap, topics)
    log = str(tmp_path / "publish.log")
    rng = random.Random(11)

    def on_topic() -> int:
        return len(read_topic(kafka_bootstrap, topics.invoices))

    def started(publishers: int) -> Callable[[], bool]:
        """A check for wait_for: that many publishers have said where they resume."""
        return lambda: Path(log).exists() and Path(log).read_text().count(RESUMING) >= publishers

    try:
        # The log grows by a slice of the book at each round, so that every round's publisher
        # has a stretch of its own to publish however fast the one before it was.
        mid_stream = 0
        for round_, book in enumerate(book_slices()):
            bill_a_slice(app, book, f"book-{round_}")
            # Transactions of one event, so that a kill lands between and inside them.
            publisher = start(env, "publish", "--page-size", "1", log=log)
            wait_for(started(round_ + 1), 60, "the publisher to start", log, every=0.02)
            time.sleep(rng.uniform(0, 0.3))
            kill(publisher)
            mid_stream += on_topic() < len(published_events(app))
        expected = published_events(app)
    finally:
        app.close()
    assert len(expected) == CONTRACTS + CONTRACTS // 3
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


def test_a_mistyped_output_topic_is_named_not_created_and_nothing_is_published(
    kafka_bootstrap: str, fresh_pg_url: str
) -> None:
    app = BillingApplication(env=store_env(fresh_pg_url))
    try:
        bill_a_slice(app, book_slices()[0], "book")
    finally:
        app.close()
    topics = new_topics(kafka_bootstrap)
    typo = f"{topics.invoices}.typo"
    env = {**cli_env(fresh_pg_url, kafka_bootstrap, topics), "BILLCYCLE_TOPIC_INVOICES": typo}

    done = subprocess.run([sys.executable, "-m", "infra.cli", "publish", "--until-caught-up"],
                          env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 1
    assert (f"topic {typo} (the invoice events' output topic) does not exist on Kafka at "
            f"{kafka_bootstrap}; billcycle publish does not create it: create it ") in done.stderr
    assert "--invoices-topic or BILLCYCLE_TOPIC_INVOICES" in done.stderr
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert typo not in admin.list_topics()
    finally:
        admin.close()


def unreachable_env(tmp_path: Path) -> tuple[dict[str, str], str]:
    """The CLI's environment with a bootstrap nothing listens on (and an empty store), and that
    bootstrap."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        bootstrap = f"127.0.0.1:{probe.getsockname()[1]}"
    db = f"sqlite:///{tmp_path / 'b.db'}"
    BillingApplication(env=store_env(db)).close()
    return cli_env(db, bootstrap, Topics()), bootstrap


def test_until_caught_up_gives_up_on_a_kafka_it_never_reaches(tmp_path: Path) -> None:
    env, bootstrap = unreachable_env(tmp_path)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "publish", "--until-caught-up", "--kafka-wait", "3"],
        env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, time.monotonic() - began < 30) == (1, True), done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"billcycle: Kafka at {bootstrap} was not reached within 3 s "
                           "(KafkaTimeoutError"), last
    assert "check --bootstrap or BILLCYCLE_KAFKA" in last


def test_a_publisher_stopped_before_it_reached_kafka_says_so_not_resumed_after_0(
    tmp_path: Path
) -> None:
    env, bootstrap = unreachable_env(tmp_path)
    log = tmp_path / "publish.log"
    with open(log, "ab") as err:
        publisher = subprocess.Popen([sys.executable, "-m", "infra.cli", "--json", "publish"],
                                     env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        wait_for(mentions(log, f"waiting for Kafka at {bootstrap}"), 30,
                 "the publisher to wait for Kafka", log)
        publisher.send_signal(signal.SIGTERM)
        out, _ = publisher.communicate(timeout=45)
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait(10)
    assert publisher.returncode == 0, log.read_text()
    assert json.loads(out) == {"published": 0, "transactions": 0,
                               "resumed_after_log_position": None, "reached_kafka": False}
    said = log.read_text()
    assert f"stopped before Kafka at {bootstrap} was ever reached" in said
    # The service waits, and says that Kafka was never reached (QA15 M2).
    assert "(not reached since the start: check --bootstrap or BILLCYCLE_KAFKA)" in said
