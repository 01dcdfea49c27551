"""Every run lists the batches of its cycle date as it starts: the store reads the batches'
starts through an index of their own, so that the list costs the same in a log of millions of
events as in a new one; a store made before the index has it made at its first open."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime

import psycopg
import pytest

from domain.application import BillingApplication
from domain.billing_run import BillingRun
from infra.store import sqlite
from infra.store.postgres import PostgresBillingRecorder
from infra.store.url import store_env
from tests.integration.test_counted_properties import counting, ingest
from tests.store_sql import on_store

NOVEMBER, DECEMBER = date(2026, 11, 1), date(2026, 12, 1)

# The index as each store names it (its events table's name first).
INDEX = {"sqlite": "stored_events_batch_started_idx",
         "postgres": "billcycle_events_batch_started_idx"}
INDEXED = {"sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = '{}'",
           "postgres": "SELECT count(*) FROM pg_indexes WHERE indexname = '{}'"}


@pytest.fixture
def kind(url: str) -> str:
    """The store `url` (tests/integration/conftest.py) is."""
    return "sqlite" if url.startswith("sqlite") else "postgres"


def start(app: BillingApplication, batch_id: str, cycle_date: date) -> BillingRun:
    run = BillingRun(batch_id=batch_id, cycle_date=cycle_date,
                     started_at=datetime(2026, 11, 29, tzinfo=UTC), manifest={})
    app.save(run)
    return run


def start_some(app: BillingApplication) -> None:
    """Batches of two cycle dates, started out of their ids' order, other events between."""
    start(app, "B-dec-z", DECEMBER)
    ingest(app, counting("seats", "m-1"))
    start(app, "B-nov", NOVEMBER)
    finished = start(app, "B-dec-a", DECEMBER)
    finished.finish(datetime(2026, 11, 30, tzinfo=UTC), {"contracts": 0})
    app.save(finished)
    ingest(app, counting("seats", "m-2"))


def listed(app: BillingApplication, cycle_date: date) -> list[tuple[str, bool]]:
    return [(run.batch_id, run.finished_at is not None) for run in app.batches(cycle_date)]


def test_a_cycle_dates_batches_are_listed_in_the_order_they_started(
        app: BillingApplication) -> None:
    start_some(app)

    assert listed(app, DECEMBER) == [("B-dec-z", False), ("B-dec-a", True)]
    assert listed(app, NOVEMBER) == [("B-nov", False)]
    assert listed(app, date(2027, 1, 1)) == []


def test_a_store_made_before_the_index_has_it_made_at_its_first_open(
        kind: str, url: str) -> None:
    # As an earlier billcycle left it: its batches started in a log without the index.
    earlier = BillingApplication(env=store_env(url))
    on_store(url, f"DROP INDEX {INDEX[kind]}")
    start_some(earlier)
    before = listed(earlier, DECEMBER), listed(earlier, NOVEMBER)
    earlier.close()
    assert on_store(url, INDEXED[kind].format(INDEX[kind])) == (0,)

    upgraded = BillingApplication(env=store_env(url))
    try:
        assert on_store(url, INDEXED[kind].format(INDEX[kind])) == (1,)
        assert (listed(upgraded, DECEMBER), listed(upgraded, NOVEMBER)) == before
        assert before == ([("B-dec-z", False), ("B-dec-a", True)], [("B-nov", False)])
    finally:
        upgraded.close()


def fill_the_log(kind: str, url: str, events: int) -> None:
    """Events of other topics, as many as a large book's log holds, and fresh statistics."""
    if kind == "sqlite":
        on_store(url, f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g"
                      f" WHERE n < {events}) INSERT INTO stored_events"
                      " SELECT printf('%032x', n), 1, 'domain.contract:Contract.Created',"
                      " x'7b7d' FROM g", "ANALYZE")
    else:
        on_store(url, "INSERT INTO billcycle_events (originator_id, originator_version, topic,"
                      " state) SELECT gen_random_uuid(), 1, 'domain.contract:Contract.Created',"
                      f" '{{}}'::bytea FROM generate_series(1, {events})", "ANALYZE")


def plan(kind: str, url: str, statement: str) -> str:
    """How the store's server would run `statement`. On PostgreSQL prepared, and planned for
    any execution (a generic plan), as a long-lived process may have it."""
    if kind == "sqlite":
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as lite:
            return "\n".join(row[3] for row in lite.execute("EXPLAIN QUERY PLAN " + statement))
    with psycopg.connect(url) as pg:
        pg.execute(f"PREPARE starts AS {statement}")
        pg.execute("SET plan_cache_mode = force_generic_plan")
        return "\n".join(row[0] for row in pg.execute("EXPLAIN EXECUTE starts"))


def test_the_starts_are_read_through_their_index_in_a_large_log(
        kind: str, url: str, app: BillingApplication) -> None:
    start(app, "B-1", DECEMBER)
    fill_the_log(kind, url, 200_000)
    start(app, "B-2", DECEMBER)

    recorder = app.store
    if isinstance(recorder, PostgresBillingRecorder):
        with recorder.datastore.get_connection() as conn:
            statement = recorder._batch_starts.as_string(conn)
    else:
        statement = sqlite._BATCH_STARTS.format(events="stored_events")
    found = plan(kind, url, statement)

    # The index alone: no scan of the table, nor a sort after it.
    assert INDEX[kind] in found, found
    assert not any(word in found for word in ("Seq Scan", "SCAN stored_events", "Sort",
                                               "TEMP B-TREE")), found
    assert [run.batch_id for run in app.batches(DECEMBER)] == ["B-1", "B-2"]
