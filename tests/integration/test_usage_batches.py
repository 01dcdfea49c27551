"""Usage is recorded as one UsageBatch event per ingest batch; message ids count once, ever."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from consumers.messages import fingerprint, parse_message
from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from domain.inbox import MessageReceipt
from domain.usage import LEGACY_USAGE_EVENT_TOPIC, UsageBatch, usage_batch_id
from infra.store.url import store_env
from projections.projection import event_class, topics
from projections.verify import _LogAsOf
from tests.unit.message_examples import CONTRACT_AMENDED, CONTRACT_CREATED

RECORDED = topics(event_class(UsageBatch, "Recorded"))[0]


def usage(message_id: str, quantity: str = "1", **extra: Any) -> dict[str, Any]:
    return {"type": "usage", "id": message_id, "occurred_at": "2026-10-03T10:00:00Z",
            "customer_id": "cus_1", "metric": "api_calls", "quantity": quantity,
            "properties": {"user": f"user-{message_id}"}, **extra}


def watermark(message_id: str) -> dict[str, Any]:
    return {"type": "usage.watermark", "id": message_id, "occurred_at": "2026-10-04T00:00:00Z",
            "metric": "api_calls", "complete_through": "2026-10-01T00:00:00Z"}


def lines(*messages: dict[str, Any]) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(m).encode() + b"\n" for m in messages))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[BillingApplication]:
    url = (f"sqlite:///{tmp_path / 'u.db'}" if request.param == "sqlite"
           else cast(str, request.getfixturevalue("fresh_pg_url")))
    application = BillingApplication(env={**store_env(url), "BILLCYCLE_TEST_URL": url})
    yield application
    application.close()


def batches(app: BillingApplication) -> list[Any]:
    return [app.mapper.to_domain_event(n)
            for n in app.recorder.select_notifications(1, 1000, topics=[RECORDED])]


def test_a_batch_of_usage_is_one_event_and_ids_count_once(app: BillingApplication) -> None:
    pipeline = IngestPipeline(app)
    first = pipeline.process_lines(
        lines(usage("u-1", "2.50"), usage("u-2"), usage("u-1", "2.5"), watermark("w-1"),
              usage("u-3", "4")),
        "first", batch_size=10)
    assert (first.accepted, first.duplicates, first.rejected) == (4, 1, [])

    [batch] = batches(app)
    assert batch.originator_id == usage_batch_id("u-1")
    recorded = UsageBatch.usage(batch.records)
    assert [(u.message_id, u.quantity) for u in recorded] == [
        ("u-1", Decimal("2.50")), ("u-2", Decimal(1)), ("u-3", Decimal(4))]
    assert recorded[0].occurred_at == datetime(2026, 10, 3, 10, tzinfo=UTC)
    assert recorded[0].properties == {"user": "user-u-1"} and recorded[0].contract_id is None

    # Later batches: the same content again is a duplicate, other content under a used id
    # (usage's or another type's) a conflicting duplicate; a new id is recorded.
    second = pipeline.process_lines(
        lines(usage("u-2"), usage("u-3", "5"), usage("w-1"), usage("u-4", "7")),
        "second", batch_size=10)
    assert (second.accepted, second.duplicates) == (1, 1)
    assert [r.message_id for r in second.rejected] == ["u-3", "w-1"]
    assert all("conflicting duplicate" in r.reason for r in second.rejected)

    assert [UsageBatch.usage(b.records)[0].message_id for b in batches(app)] == ["u-1", "u-4"]
    # Distinct values are kept for properties a contract counts (on PostgreSQL only those):
    # one that starts counting "user" now finds the values sent before.
    seats = {**CONTRACT_AMENDED["components"][1], "unique_property": "user"}
    contract = {**CONTRACT_CREATED, "components": [*CONTRACT_CREATED["components"], seats]}
    assert pipeline.process_lines(lines(contract), "third").accepted == 1
    reading = app.store.read_meter("cus_1", "api_calls", [""],
                                   datetime(2026, 10, 1, tzinfo=UTC),
                                   datetime(2026, 11, 1, tzinfo=UTC), "user")
    assert (reading.quantity_sum, reading.event_count, reading.unique_count) == (
        Decimal("14.50"), 4, 4)
    assert {m["message_id"] for m in app.dead_letters()} == {"u-3", "w-1"}


def test_a_batch_with_no_new_usage_records_no_usage_event(app: BillingApplication) -> None:
    pipeline = IngestPipeline(app)
    pipeline.process_lines(lines(usage("u-1")), "first")
    report = pipeline.process_lines(lines(usage("u-1"), watermark("w-1")), "second")
    assert (report.accepted, report.duplicates) == (1, 1)
    assert len(batches(app)) == 1


def test_a_store_written_before_usage_was_batched_still_knows_its_message_ids(
    app: BillingApplication,
) -> None:
    # Before UsageBatch, each usage message was a UsageEvent and each other message left a
    # MessageReceipt; their ids were in the log only. Write such a log by hand.
    old_usage, old_watermark = usage("u-old", "3"), watermark("w-old")
    legacy = [
        (LEGACY_USAGE_EVENT_TOPIC, {
            "message_id": "u-old", "fingerprint": fingerprint_of(old_usage),
            "customer_id": "cus_1", "metric": "api_calls", "quantity": Decimal(3),
            "occurred_at": datetime(2026, 10, 3, 10, tzinfo=UTC),
            "properties": old_usage["properties"], "contract_id": None,
            "timestamp": datetime(2026, 10, 3, 11, tzinfo=UTC)}),
        (f"{get_topic(MessageReceipt)}.Received", {
            "message_id": "w-old", "message_type": "usage.watermark",
            "fingerprint": fingerprint_of(old_watermark),
            "timestamp": datetime(2026, 10, 4, 1, tzinfo=UTC)}),
    ]
    app.recorder.insert_events([
        StoredEvent(uuid4(), 1, topic, app.mapper.transcoder.encode(state))
        for topic, state in legacy])
    url = app.env["BILLCYCLE_TEST_URL"]
    app.close()

    reopened = BillingApplication(env=store_env(url))  # opening copies the ids, once
    try:
        report = IngestPipeline(reopened).process_lines(
            lines(old_usage, old_watermark, usage("u-old", "4"), usage("u-new")), "again")
        assert (report.accepted, report.duplicates) == (1, 2)
        assert [(r.message_id, "conflicting duplicate" in r.reason)
                for r in report.rejected] == [("u-old", True)]

        # batch verify rebuilds usage from the log: the old event's usage counts too.
        end = reopened.store.max_notification_id()
        assert end is not None
        usage_in_log = _LogAsOf(reopened, end).meters(end, {"cus_1"}).read_meter(
            "cus_1", "api_calls", [""], datetime(2026, 10, 1, tzinfo=UTC),
            datetime(2026, 11, 1, tzinfo=UTC), "user")
        assert (usage_in_log.quantity_sum, usage_in_log.unique_count) == (Decimal(4), 2)
    finally:
        reopened.close()


def fingerprint_of(message: dict[str, Any]) -> str:
    return fingerprint(parse_message(json.dumps(message).encode()))
