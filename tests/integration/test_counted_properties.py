"""Distinct usage values are kept (on PostgreSQL) only for properties some contract counts; a
contract that starts counting a property finds every value of it sent before, in any order."""

from __future__ import annotations

import io
import json
import secrets
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from domain.usage import UNCOUNTED_MARK, MeterRequest
from infra.store.url import store_env
from tests.store_sql import on_store
from tests.unit.message_examples import CONTRACT_AMENDED, CONTRACT_CREATED

OCTOBER = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))


def usage(message_id: str, metric: str = "active_users", **properties: Any) -> dict[str, Any]:
    return {"type": "usage", "id": message_id, "occurred_at": "2026-10-03T10:00:00Z",
            "customer_id": "cus_1", "metric": metric, "quantity": "1",
            "properties": properties}


def counting(unique_property: str, message_id: str = "m-1") -> dict[str, Any]:
    """contract.created of cus_1 whose components count `unique_property`'s values."""
    seats = {**CONTRACT_AMENDED["components"][1], "unique_property": unique_property}
    return {**CONTRACT_CREATED, "id": message_id, "contract_id": f"ct_{message_id}",
            "components": [*CONTRACT_CREATED["components"], seats]}


def amended_to_count(unique_property: str, contract_id: str) -> dict[str, Any]:
    seats = {**CONTRACT_AMENDED["components"][1], "unique_property": unique_property}
    return {**CONTRACT_AMENDED, "id": f"a-{unique_property}", "contract_id": contract_id,
            "components": [CONTRACT_AMENDED["components"][0], seats]}


def ingest(app: BillingApplication, *messages: dict[str, Any], batch_size: int = 100) -> None:
    stream = io.BytesIO(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
    report = IngestPipeline(app).process_lines(stream, "test", batch_size=batch_size)
    assert report.rejected == []


def unique(app: BillingApplication, prop: str, metric: str = "active_users") -> int:
    return app.store.read_meter("cus_1", metric, [""], *OCTOBER, prop).unique_count


def test_values_sent_before_and_after_a_contract_counts_them_are_all_counted(
    app: BillingApplication,
) -> None:
    # Before any contract: stored usage only. Then a batch with a contract counting user_id
    # and more usage; then usage alone. Batches of two messages: several UsageBatch events.
    ingest(app, usage("u-1", user_id="a"), usage("u-2", user_id="b", region="eu"),
           usage("u-3", user_id="a", region="us"), batch_size=2)
    ingest(app, usage("u-4", user_id="c"), counting("user_id"), usage("u-5", user_id="d"),
           batch_size=10)
    ingest(app, usage("u-6", user_id="e"), usage("u-7", user_id="a", seat=3), batch_size=2)
    assert unique(app, "user_id") == 5
    # A property that a contract starts counting later (by amendment): all its values too.
    ingest(app, amended_to_count("seat", "ct_m-1"))
    assert unique(app, "seat") == 1
    ingest(app, usage("u-8", user_id="f", seat=4))
    assert (unique(app, "user_id"), unique(app, "seat")) == (6, 2)


@pytest.mark.postgres
def test_values_the_store_cannot_key_are_counted_all_the_same(app: BillingApplication) -> None:
    # QA (helper-25, F7): a counted value holding U+0000, or too long for PostgreSQL's index,
    # stopped ingest for good, and before any contract counted it, the contract that did.
    # They are kept as digests (domain.usage.counted_value): distinct values stay distinct.
    long_a, long_b = secrets.token_hex(3000), secrets.token_hex(3000)
    ingest(app, usage("u-1", user_id="bob\u0000"), usage("u-2", user_id=long_a),
           usage("u-3", user_id="\u0001sha256:" + "0" * 64), batch_size=2)
    ingest(app, counting("user_id"), usage("u-4", user_id="bob"), usage("u-5", user_id=long_b),
           usage("u-6", user_id=long_a), usage("u-7", user_id="bob\u0000"),
           usage("u-8", user_id="\u00e9" * 200))
    assert unique(app, "user_id") == 6
    # A JSON integer too (helper-28, F2): 3,000 digits were refused on PostgreSQL alone.
    big = int("7" * 3000)
    ingest(app, usage("u-9", user_id=big), usage("u-10", user_id=big + 1),
           usage("u-11", user_id=big))
    assert unique(app, "user_id") == 8


def test_values_unique_count_does_not_count_are_read_as_events_it_left_uncounted(
    app: BillingApplication,
) -> None:
    # QA (F3): a decimal, null, array or object counted nobody, and nothing said so. They are
    # kept per message, before and after a contract counts the property, and never counted.
    ingest(app, usage("u-1", user_id="a"), usage("u-2", user_id=1.5), usage("u-3", user_id=None),
           batch_size=2)
    ingest(app, counting("user_id"), usage("u-4", user_id=[1]), usage("u-5", user_id={"k": 1}),
           usage("u-6", user_id=1.5), usage("u-7"), usage("u-8", user_id=7),
           usage("u-9", user_id="7"))
    read = app.store.read_meter("cus_1", "active_users", [""], *OCTOBER, "user_id")
    # a and 7 ("7" is the same value); u-7 has no user_id: no value, not an uncounted one.
    assert (read.event_count, read.unique_count, read.uncounted) == (9, 2, 5)
    assert read.uncounted_first == UNCOUNTED_MARK + "array:u-4"  # the least, as Python orders
    request = MeterRequest("cus_1", "active_users", ("",), *OCTOBER, "user_id")
    assert app.store.read_meters([request, request]) == [read, read]


def test_an_earlier_billcycle_reading_the_store_counts_no_uncounted_value(
    app: BillingApplication, url: str
) -> None:
    # QA10 (F1): rolled back to a billcycle before the marks, a run read each mark kept under
    # the property's name as one more distinct value, and billed it. Kept under a name of
    # their own, the marks are out of an earlier version's read (count(DISTINCT value) of the
    # property's rows).
    ingest(app, counting("user_id"), usage("u-1", user_id="a"), usage("u-2", user_id=1.5),
           usage("u-3", user_id=None), usage("u-4", user_id="b"))
    earlier_read = "SELECT count(DISTINCT value) FROM usage_unique WHERE property = 'user_id'"
    assert tuple(on_store(url, earlier_read)) == (2,)
    read = app.store.read_meter("cus_1", "active_users", [""], *OCTOBER, "user_id")
    assert (read.unique_count, read.uncounted) == (2, 2)


def test_a_store_from_before_the_marks_has_them_made_at_its_first_open(url: str) -> None:
    # QA10 (F4): usage stored by a billcycle before the marks had none, so runs named fewer
    # uncounted events than a period held and `batch verify` of later batches differed. A store
    # without a recorded format is such a store: its first open marks its stored usage.
    app = BillingApplication(env=store_env(url))
    try:
        ingest(app, counting("user_id"), usage("u-1", user_id="a"), usage("u-2", user_id=1.5),
               usage("u-3", user_id=None))
    finally:
        app.close()
    on_store(url, "DELETE FROM usage_unique WHERE property <> 'user_id'",
             "DELETE FROM billcycle_store_format")

    app = BillingApplication(env=store_env(url))
    try:
        read = app.store.read_meter("cus_1", "active_users", [""], *OCTOBER, "user_id")
        assert (read.unique_count, read.uncounted) == (1, 2)
    finally:
        app.close()


def test_a_boolean_is_counted_as_its_json_text(app: BillingApplication) -> None:
    # QA11 (F2): values are counted as their text, so 7 and "7" are one value; a boolean was
    # kept as Python's "True", and true and "true" billed two users.
    ingest(app, counting("user_id"), usage("u-1", user_id=True), usage("u-2", user_id="true"),
           usage("u-3", user_id=7), usage("u-4", user_id="7"), usage("u-5", user_id=False))
    assert unique(app, "user_id") == 3  # true, 7 and false


def test_a_store_of_format_1_has_its_booleans_respelled_at_its_first_open(url: str) -> None:
    # Store format 2: the rows an earlier version kept as "True" are read as true, so that a
    # period holding true from before the upgrade and "true" after it counts one user.
    app = BillingApplication(env=store_env(url))
    try:
        ingest(app, counting("user_id"), usage("u-1", user_id=True), usage("u-2", user_id="x"))
    finally:
        app.close()
    on_store(url, "UPDATE usage_unique SET value = 'True' WHERE value = 'true'",
             "DELETE FROM billcycle_store_format",
             "INSERT INTO billcycle_store_format (version) VALUES (1)")

    app = BillingApplication(env=store_env(url))
    try:
        ingest(app, usage("u-3", user_id="true"), usage("u-4", user_id=True))
        assert unique(app, "user_id") == 2
        respelled = "SELECT count(*) FROM usage_unique WHERE value = 'True'"
        assert tuple(on_store(url, respelled)) == (0,)
    finally:
        app.close()


def test_postgresql_keeps_values_of_counted_properties_only(fresh_pg_url: str) -> None:
    url = fresh_pg_url  # SQLite keeps every property's values
    app = BillingApplication(env=store_env(url))
    try:
        ingest(app, usage("u-1", user_id="a", region="eu"), counting("user_id"),
               usage("u-2", metric="api_calls", user_id="b", region="us"))
        assert unique(app, "user_id") == 1
        assert unique(app, "user_id", metric="api_calls") == 1
    finally:
        app.close()
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT DISTINCT property FROM usage_unique").fetchall()
        counted = conn.execute("SELECT property FROM counted_properties").fetchall()
    assert rows == [("user_id",)] and counted == [("user_id",)]


@pytest.mark.postgres
def test_a_store_that_had_events_before_keeps_every_property(fresh_pg_url: str) -> None:
    url = fresh_pg_url
    app = BillingApplication(env=store_env(url))
    try:
        ingest(app, usage("u-1", user_id="a"))
    finally:
        app.close()
    with psycopg.connect(url) as conn:  # as a store written before counted_properties
        conn.execute("DROP TABLE counted_properties")
    reopened = BillingApplication(env=store_env(url))
    try:
        ingest(reopened, usage("u-2", user_id="b", region="eu"))
        assert unique(reopened, "region") == 1
    finally:
        reopened.close()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT property FROM counted_properties").fetchall() == [("*",)]
