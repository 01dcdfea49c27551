"""The indexes of the events a store indexes on their own (domain.ports.INDEXED_TOPICS), seen
from outside billcycle: whether one exists, and how the store's server reads through it."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import psycopg
from eventsourcing.utils import get_topic

from domain.application import BillingApplication
from domain.billing_run import BillingRun
from domain.inbox import DeadLetter
from infra.store.postgres import PostgresBillingRecorder
from infra.store.sqlite import SQLiteBillingRecorder
from tests.store_sql import on_store

# The events indexed on their own, by the name of their index (after the events table's).
TOPICS = {"batch_started": get_topic(BillingRun.Started),  # type: ignore[attr-defined]
          "dead_letter": get_topic(DeadLetter.Rejected)}  # type: ignore[attr-defined]

# The events table as each store of the tests names it, which names its indexes.
EVENTS = {"sqlite": "stored_events", "postgres": "billcycle_events"}
_INDEXED = {"sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = '{}'",
            "postgres": "SELECT count(*) FROM pg_indexes WHERE indexname = '{}'"}


def index_name(kind: str, name: str) -> str:
    """The index of the topic `name` (TOPICS) in a store of this kind."""
    return f"{EVENTS[kind]}_{name}_idx"


def indexed(kind: str, url: str, name: str) -> bool:
    """Whether the store holds the index of the topic `name` (TOPICS)."""
    return bool(on_store(url, _INDEXED[kind].format(index_name(kind, name)))[0])


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


def reading(app: BillingApplication, topic: str) -> str:
    """The statement by which the app's store reads an indexed topic's events."""
    recorder = app.store
    if isinstance(recorder, PostgresBillingRecorder):
        with recorder.datastore.get_connection() as conn:
            return recorder._indexed_events[topic].as_string(conn)
    assert isinstance(recorder, SQLiteBillingRecorder)
    return recorder._indexed_events[topic]


def plan(kind: str, url: str, statement: str) -> str:
    """How the store's server would run `statement`. On PostgreSQL prepared, and planned for
    any execution (a generic plan), as a long-lived process may have it."""
    if kind == "sqlite":
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as lite:
            return "\n".join(row[3] for row in lite.execute("EXPLAIN QUERY PLAN " + statement))
    with psycopg.connect(url) as pg:
        pg.execute(f"PREPARE indexed AS {statement}")
        pg.execute("SET plan_cache_mode = force_generic_plan")
        return "\n".join(row[0] for row in pg.execute("EXPLAIN EXECUTE indexed"))


def read_through_its_index(kind: str, url: str, app: BillingApplication, name: str) -> None:
    """The store's read of the topic `name` (TOPICS) reads its index alone: no scan of
    the events table, nor a sort after it."""
    found = plan(kind, url, reading(app, TOPICS[name]))
    assert index_name(kind, name) in found, found
    assert not any(word in found for word in ("Seq Scan", "SCAN stored_events", "Sort",
                                               "TEMP B-TREE")), found
