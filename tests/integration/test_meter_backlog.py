"""PostgreSQL folds recorded usage into the meters after ingest (the meter backlog); billing
folds what is left before it reads, so the meters it prices from never lag the log."""

from __future__ import annotations

import io
import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from domain.commands import Origin
from domain.meter_reads import MeterReads
from domain.usage import MeterReading, MeterRequest
from infra.store.postgres import FOLD_BATCHES
from infra.store.url import store_env

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 10, 3, 10, tzinfo=UTC)
MONTH = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))


def usage(message_id: str, quantity: str = "1", at: datetime = T0, **extra: Any) -> bytes:
    message = {"type": "usage", "id": message_id, "occurred_at": at.isoformat(),
               "customer_id": "cus_1", "metric": "api_calls", "quantity": quantity, **extra}
    return json.dumps(message).encode()


def ingest(app: BillingApplication, *raws: bytes) -> None:
    """One ingest batch, as the consumer writes it: the meters are not folded here."""
    report = IngestPipeline(app).process(
        [Origin("test", f"line {i}", raw) for i, raw in enumerate(raws, start=1)])
    assert not report.rejected, report.rejected


def read(app: BillingApplication, start: datetime = MONTH[0], end: datetime = MONTH[1],
         tags: tuple[str, ...] = ("",), customer: str = "cus_1",
         metric: str = "api_calls") -> MeterReading:
    return app.store.read_meter(customer, metric, tags, start, end, None)


def backlog(app: BillingApplication) -> int:
    recorder: Any = app.recorder
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(recorder._sql("SELECT count(*) AS n FROM {schema}.meter_backlog"))
        return int(curs.fetchone()["n"])


@pytest.fixture
def pg(fresh_pg_url: str) -> Iterator[BillingApplication]:
    application = BillingApplication(env=store_env(fresh_pg_url))
    yield application
    application.close()


def test_ingest_leaves_usage_in_the_backlog_and_billing_folds_it_before_reading(
        pg: BillingApplication) -> None:
    ingest(pg, usage("u-1", "2.50"), usage("u-2", "4"))
    assert backlog(pg) == 1
    assert read(pg) == MeterReading()  # the store's own read does not fold

    # Billing reads through MeterReads, which folds the backlog first.
    reads = MeterReads(pg.store)
    reads.planning = False
    reading = reads.read(MeterRequest("cus_1", "api_calls", ("",), *MONTH, None))
    assert (reading.quantity_sum, reading.event_count) == (Decimal("6.50"), 2)
    assert backlog(pg) == 0
    assert pg.update_meters() == 0  # nothing left


def test_the_server_folds_usage_as_the_saving_transaction_does(
        pg: BillingApplication, tmp_path: Any) -> None:
    """The same usage, in the same batches, gives the same meters on PostgreSQL (folded on
    the server, from the stored events) as on SQLite (folded in Python, in the transaction)."""
    sqlite = BillingApplication(env=store_env(f"sqlite:///{tmp_path / 'm.db'}"))
    try:
        rng = random.Random(20261127)
        quantities = ["1", "2.50", "2.5", "0.000001", "7", "123456789012345.125", "0"]
        keys = [("cus_1", "api_calls", None), ("cus_1", "api_calls", "ct_1"),
                ("cus_1", "storage_gb", None), ("cus_2", "api_calls", None)]
        n = 0
        for _ in range(6):
            raws = []
            for _ in range(rng.randint(1, 60)):
                n += 1
                customer, metric, contract = rng.choice(keys)
                # Few distinct instants: buckets fold many records, ties go by message id.
                at = T0 + timedelta(minutes=rng.choice([0, 1, 14, 15, 16, 44, 60, 1440]),
                                    microseconds=rng.choice([0, 0, 1, 999999]))
                extra: dict[str, Any] = {"customer_id": customer, "metric": metric}
                if contract:
                    extra["contract_id"] = contract
                raws.append(usage(f"u-{rng.randint(0, 10**6):07d}-{n}", rng.choice(quantities),
                                  at, **extra))
            for app in (pg, sqlite):
                ingest(app, *raws)
        pg.update_meters()

        for customer, metric, contract in keys:
            tags = (contract or "",)
            for minutes in range(0, 24 * 60 + 15, 15):
                start = T0 + timedelta(minutes=minutes)
                span = (start, start + timedelta(minutes=15))
                on_pg = read(pg, *span, tags=tags, customer=customer, metric=metric)
                on_sqlite = read(sqlite, *span, tags=tags, customer=customer, metric=metric)
                assert (on_pg.quantity_sum, on_pg.event_count, on_pg.quantity_max,
                        on_pg.latest_quantity) == (
                    on_sqlite.quantity_sum, on_sqlite.event_count, on_sqlite.quantity_max,
                    on_sqlite.latest_quantity), (customer, metric, contract, start)
            whole_pg = read(pg, tags=tags, customer=customer, metric=metric)
            whole_sqlite = read(sqlite, tags=tags, customer=customer, metric=metric)
            assert whole_pg.quantity_sum == whole_sqlite.quantity_sum
            assert whole_pg.event_count == whole_sqlite.event_count
    finally:
        sqlite.close()


def test_revisions_keep_commit_order_through_the_backlog(pg: BillingApplication) -> None:
    ingest(pg, usage("u-1"))
    pg.update_meters()
    seen = read(pg).revision
    assert seen == pg.store.max_notification_id()

    # Late usage for the bucket already read, then usage for a later bucket.
    ingest(pg, usage("u-2", at=T0 + timedelta(minutes=5)))
    ingest(pg, usage("u-3", at=T0 + timedelta(hours=2)))
    head = pg.store.max_notification_id()
    assert pg.store.changed_buckets("cus_1", "api_calls", [""], seen, MONTH[1]) == []
    pg.update_meters()
    assert pg.store.changed_buckets("cus_1", "api_calls", [""], seen, MONTH[1]) == [
        T0, T0 + timedelta(hours=2)]
    # Each bucket takes the revision of the batch that last changed it, not of the fold.
    assert read(pg, T0 + timedelta(hours=2), T0 + timedelta(hours=3)).revision == head
    assert seen < read(pg, T0, T0 + timedelta(minutes=15)).revision < head


def test_concurrent_folds_fold_each_batch_once(pg: BillingApplication) -> None:
    for b in range(30):
        ingest(pg, *(usage(f"u-{b}-{i}", at=T0 + timedelta(minutes=b)) for i in range(20)))
    folded: list[int] = []
    threads = [threading.Thread(target=lambda: folded.append(pg.update_meters()))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(folded) == 30
    reading = read(pg)
    assert (reading.quantity_sum, reading.event_count) == (Decimal(600), 600)


def test_folds_running_beside_ingest_miss_nothing_and_count_nothing_twice(
        pg: BillingApplication) -> None:
    # Three writers (the ingest transactions, the events table locked) and two folders at once.
    def write(w: int) -> None:
        for b in range(12):
            ingest(pg, *(usage(f"u-{w}-{b}-{i}", "1.5", T0 + timedelta(minutes=b % 7))
                         for i in range(25)))

    writing = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    done = threading.Event()

    def fold_until_done() -> None:
        while not done.is_set():
            pg.update_meters()

    folding = [threading.Thread(target=fold_until_done) for _ in range(2)]
    for t in writing + folding:
        t.start()
    for t in writing:
        t.join()
    done.set()
    for t in folding:
        t.join()
    pg.update_meters()
    assert backlog(pg) == 0
    reading = read(pg)
    assert (reading.quantity_sum, reading.event_count) == (Decimal("1350.0"), 900)
    assert reading.revision == pg.store.max_notification_id()


def test_a_fold_of_the_most_oldest_batches_stops_after_a_transaction(
        pg: BillingApplication) -> None:
    for b in range(FOLD_BATCHES + 10):
        ingest(pg, usage(f"u-{b}", at=T0 + timedelta(minutes=b)))
    assert pg.update_meters(most=1) == FOLD_BATCHES  # a transaction's worth at least
    assert backlog(pg) == 10
    assert read(pg).event_count == FOLD_BATCHES
    assert pg.update_meters() == 10
    assert read(pg).event_count == FOLD_BATCHES + 10


def test_a_batch_without_new_usage_adds_nothing_to_the_backlog(pg: BillingApplication) -> None:
    ingest(pg, usage("u-1"))
    # The same id with other content is a conflicting duplicate: a dead letter, no usage.
    report = IngestPipeline(pg).process([Origin("test", "line 1", usage("u-1", "9"))])
    assert len(report.rejected) == 1
    assert backlog(pg) == 1
    pg.update_meters()
    assert read(pg).quantity_sum == 1


def test_file_ingest_leaves_the_meters_up_to_date(pg: BillingApplication) -> None:
    stream = io.BytesIO(b"\n".join(usage(f"u-{i}", "2") for i in range(25)))
    assert IngestPipeline(pg).process_lines(stream, "file", batch_size=10).accepted == 25
    assert backlog(pg) == 0
    assert read(pg).quantity_sum == 50
