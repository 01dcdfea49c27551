"""SQLite store: the library's process recorder plus meters and the contract index.

Selected with PERSISTENCE_MODULE=infra.store.sqlite (see infra/store/url.py). SQLite has no
decimal type, so quantities are stored as TEXT and combined in Python with exact Decimal
arithmetic. Times are stored as fixed-width ISO-8601 UTC text, so text order is time order.
Lists of keys and ids travel as one JSON parameter (json_each), which keeps every query
a single statement whatever the number of SQLite variables allowed.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, cast
from urllib.parse import quote
from uuid import UUID

# The module, not the class: PERSISTENCE_MODULE=infra.store.sqlite must find exactly one
# factory class here.
import eventsourcing.sqlite as library
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from eventsourcing.sqlite import SQLiteCursor, SQLiteProcessRecorder
from eventsourcing.utils import Environment, EnvType

from domain.ports import INDEXED_TOPICS, BillingStore
from domain.unbilled_usage import (
    MeteredUsage,
    UsageWithoutContract,
    bounded_to,
    metered_usage,
    usage_without_contract,
)
from domain.usage import (
    USAGE_BATCH_RECORDED_TOPIC,
    MeterBucket,
    MeterKey,
    MeterReading,
    MeterRequest,
    uncounted_property,
)
from infra.store import store_format
from infra.store.batch import (
    BATCH_KWARG,
    LEGACY_RECEIPT_TOPICS_SQL,
    StoreBatch,
    exact_decimals,
    indexed_statement,
    refuse_opaque_state,
    take_batch,
    topic_is,
    uncounted_rows,
    unique_aggregates,
    utc_text,
)
from infra.store.url import LOCK_TIMEOUT_SECONDS, NoStore, must_exist

_CREATE_TABLES = (
    store_format.CREATE_TABLE.format(prefix=""),
    "CREATE TABLE IF NOT EXISTS usage_buckets ("
    " customer_id TEXT NOT NULL, metric TEXT NOT NULL, contract_tag TEXT NOT NULL,"
    " bucket_start TEXT NOT NULL,"
    " quantity_sum TEXT NOT NULL, event_count INTEGER NOT NULL, quantity_max TEXT NOT NULL,"
    " latest_at TEXT NOT NULL, latest_event_id TEXT NOT NULL, latest_quantity TEXT NOT NULL,"
    " revision INTEGER NOT NULL,"
    " PRIMARY KEY (customer_id, metric, contract_tag, bucket_start)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS usage_buckets_revision_idx"
    " ON usage_buckets (customer_id, metric, revision)",
    "CREATE TABLE IF NOT EXISTS usage_unique ("
    " customer_id TEXT NOT NULL, metric TEXT NOT NULL, contract_tag TEXT NOT NULL,"
    " property TEXT NOT NULL, value TEXT NOT NULL, bucket_start TEXT NOT NULL,"
    " PRIMARY KEY (customer_id, metric, contract_tag, property, value, bucket_start))"
    " WITHOUT ROWID",
    # Every message id ingest accepted, with its content fingerprint: the duplicate check
    # reads it, and its primary key makes an id count once ever.
    "CREATE TABLE IF NOT EXISTS received_messages ("
    " message_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS contract_index ("
    " contract_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS contract_index_customer_idx"
    " ON contract_index (customer_id, contract_id)",
)

# As on PostgreSQL (infra/store/postgres.py): message ids of a store written before usage was
# batched, copied from the log while received_messages is empty.
_COPY_LEGACY_RECEIPTS = (
    "INSERT OR IGNORE INTO received_messages"
    " SELECT json_extract(CAST(state AS TEXT), '$.message_id'),"
    " json_extract(CAST(state AS TEXT), '$.fingerprint')"
    " FROM {events} WHERE topic IN (" + LEGACY_RECEIPT_TOPICS_SQL + ")"
    " AND NOT EXISTS (SELECT 1 FROM received_messages)"
)

# As on PostgreSQL: each indexed topic's events indexed on their own (entries in rowid order),
# made at the first open of a store from before the index too.
_INDEX_TOPIC = "CREATE INDEX IF NOT EXISTS {events}_{name}_idx ON {events} (topic) WHERE {topic_is}"
_INDEXED_EVENTS = (
    "SELECT originator_id, originator_version, topic, state FROM {events}"
    " WHERE {topic_is} ORDER BY rowid"
)

_BUCKET_COLUMNS = (
    "quantity_sum, event_count, quantity_max, latest_at, latest_event_id, latest_quantity, revision"
)

_SELECT_BUCKETS_FOR_KEYS = (
    f"SELECT b.customer_id, b.metric, b.contract_tag, b.bucket_start, {_BUCKET_COLUMNS}"
    " FROM json_each(?) AS j JOIN usage_buckets AS b"
    " ON b.customer_id = json_extract(j.value, '$[0]')"
    " AND b.metric = json_extract(j.value, '$[1]')"
    " AND b.contract_tag = json_extract(j.value, '$[2]')"
    " AND b.bucket_start = json_extract(j.value, '$[3]')"
)

_UPSERT_BUCKETS = "INSERT OR REPLACE INTO usage_buckets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_UNIQUE = "INSERT OR IGNORE INTO usage_unique VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_CONTRACT = "INSERT OR IGNORE INTO contract_index VALUES (?, ?)"
# No OR IGNORE: an id another writer committed meanwhile must fail the transaction.
_INSERT_MESSAGE = "INSERT INTO received_messages VALUES (?, ?)"
_RECEIVED_MESSAGES = (
    "SELECT message_id, fingerprint FROM received_messages"
    " WHERE message_id IN (SELECT value FROM json_each(?))"
)

_IN_RANGE = (
    " WHERE customer_id = ? AND metric = ?"
    " AND contract_tag IN (SELECT value FROM json_each(?))"
    " AND bucket_start >= ? AND bucket_start < ?"
)
# The same with the untagged buckets within some windows besides (a JSON array of [start,
# end] pairs, after the tags).
_IN_RANGE_WITHIN = (
    " WHERE customer_id = ? AND metric = ?"
    " AND (contract_tag IN (SELECT value FROM json_each(?))"
    "  OR contract_tag = '' AND EXISTS (SELECT 1 FROM json_each(?) AS w"
    "  WHERE bucket_start >= json_extract(w.value, '$[0]')"
    "  AND bucket_start < json_extract(w.value, '$[1]')))"
    " AND bucket_start >= ? AND bucket_start < ?"
)
_READ_BUCKETS = f"SELECT {_BUCKET_COLUMNS} FROM usage_buckets" + _IN_RANGE
_UNIQUES = "SELECT " + unique_aggregates("value", "char") + " FROM usage_unique"
_COUNT_UNIQUE = _UNIQUES + _IN_RANGE + " AND property IN (?, ?)"
_READ_BUCKETS_WITHIN = f"SELECT {_BUCKET_COLUMNS} FROM usage_buckets" + _IN_RANGE_WITHIN
_COUNT_UNIQUE_WITHIN = _UNIQUES + _IN_RANGE_WITHIN + " AND property IN (?, ?)"

_CHANGED_BUCKETS = (
    "SELECT DISTINCT bucket_start FROM usage_buckets"
    " WHERE customer_id = ? AND metric = ? AND revision > ?"
    " AND contract_tag IN (SELECT value FROM json_each(?)) AND bucket_start < ?"
    " ORDER BY bucket_start"
)
_CUSTOMER_CONTRACTS = (
    "SELECT customer_id, contract_id FROM contract_index"
    " WHERE customer_id IN (SELECT value FROM json_each(?)) ORDER BY customer_id, contract_id"
)

_METERED_USAGE = (
    "SELECT customer_id, metric, contract_tag, SUM(event_count), MIN(bucket_start),"
    " MAX(bucket_start) FROM usage_buckets"
    " WHERE customer_id IN (SELECT value FROM json_each(?))"
    " GROUP BY customer_id, metric, contract_tag"
)

# The same, from an instant per customer and metric on (the usage before it acknowledged).
_METERED_USAGE_SINCE = (
    "SELECT b.customer_id, b.metric, b.contract_tag, SUM(b.event_count), MIN(b.bucket_start),"
    " MAX(b.bucket_start) FROM usage_buckets b JOIN json_each(?) a"
    " ON b.customer_id = json_extract(a.value, '$[0]')"
    " AND b.metric = json_extract(a.value, '$[1]')"
    " AND b.bucket_start >= json_extract(a.value, '$[2]')"
    " GROUP BY b.customer_id, b.metric, b.contract_tag"
)

# Meter buckets of customers without a contract (see UsageWithoutContract); as on PostgreSQL.
_WITHOUT_CONTRACT = (
    "SELECT customer_id, metric, bucket_start, event_count, quantity_sum, latest_at"
    " FROM usage_buckets b WHERE NOT EXISTS"
    " (SELECT 1 FROM contract_index c WHERE c.customer_id = b.customer_id)"
    " ORDER BY customer_id, metric, bucket_start"
)


class SQLiteBillingRecorder(SQLiteProcessRecorder, BillingStore):
    """Events, tracking, meters and contract links, all in the library's insert transaction."""

    def construct_create_table_statements(self) -> list[str]:
        # Appended to the library's own statements, so CREATE_TABLE makes a fresh database
        # complete with no migration step.
        return [*super().construct_create_table_statements(), *_CREATE_TABLES,
                _COPY_LEGACY_RECEIPTS.format(events=self.events_table_name),
                *(_INDEX_TOPIC.format(events=self.events_table_name, name=name,
                                      topic_is=topic_is(topic))
                  for name, topic in INDEXED_TOPICS.items())]

    def _keep_store_format(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            def execute(statement: str) -> Any:
                c.execute(statement)
                return c.fetchone()
            store_format.keep_store_format(execute, mark_uncounted=lambda: self._mark_uncounted(c))

    def _mark_uncounted(self, c: Any) -> None:
        """The uncounted marks of the values in the usage stored before the store's format 1
        (store_format), which ingest did not keep (every property's, as SQLite keeps them)."""
        found: set[Any] = set()
        c.execute(f"SELECT state FROM {self.events_table_name} WHERE topic = ?",
                  (USAGE_BATCH_RECORDED_TOPIC,))
        # Usage batches are large: one at a time.
        for row in store_format.upgrading(iter(c.fetchone, None)):
            found |= uncounted_rows(json.loads(row[0])["records"])
        marks = list(found)
        if marks:
            c.executemany(_INSERT_UNIQUE, [(*r[:5], utc_text(r[5], "bucket_start"))
                                           for r in marks])

    def create_table(self) -> None:
        """The library's, tried again while other processes open the same store.

        Its schema transaction begins deferred, reads, then writes (the tracking migration row,
        the legacy receipts' copy): when another connection wrote meanwhile, SQLite refuses
        that upgrade at once rather than wait ("database is locked" in 0.4 s, not the lock
        timeout), and two processes making a new store race on the migration row. Every
        statement is idempotent, so the whole is tried again until the lock timeout.
        """
        deadline = time.monotonic() + float(LOCK_TIMEOUT_SECONDS)
        while True:
            try:
                super().create_table()
                self._keep_store_format()
                return
            except (OperationalError, IntegrityError) as error:
                contended = isinstance(error, IntegrityError) or "locked" in str(error)
                if not contended or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.02, 0.1))

    # --- writing ----------------------------------------------------------------------------

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        batch, rest = take_batch(stored_events, kwargs, fold_usage=True)
        if batch is not None:
            rest[BATCH_KWARG] = _SQLiteBatch.of(batch)
        return super().insert_events(stored_events, **rest)

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> Sequence[int] | None:
        # The library inserts the events (taking SQLite's write lock) and the tracking row.
        # Any exception from here on rolls the whole transaction back.
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        batch = kwargs.get(BATCH_KWARG)
        if isinstance(batch, _SQLiteBatch):
            self._write_batch(c, batch)
        return notification_ids

    def _write_batch(self, c: SQLiteCursor, batch: _SQLiteBatch) -> None:
        # Each bucket's revision is the events table's max rowid as this transaction sees it
        # after its own insert. SQLite admits one writer at a time until commit, so revisions
        # follow commit order exactly: a reader that has seen revision R and asks for buckets
        # with revision > R can never miss a change that commits later with a lower number.
        revision = self._max_notification_id(c)
        if batch.deltas:
            c.executemany(_UPSERT_BUCKETS, _merged_rows(c, batch, revision))
        if batch.uniques:
            c.executemany(_INSERT_UNIQUE, batch.uniques)
        if batch.contracts:
            c.executemany(_INSERT_CONTRACT, batch.contracts)
        if batch.messages:
            c.executemany(_INSERT_MESSAGE, batch.messages)

    def update_meters(self, most: int | None = None) -> int:
        return 0  # usage is folded into the meters in the transaction that records it

    # --- reading ----------------------------------------------------------------------------

    def read_meter(
        self,
        customer_id: str,
        metric: str,
        contract_tags: Sequence[str],
        start: datetime,
        end: datetime,
        unique_property: str | None,
        untagged_within: Sequence[tuple[datetime, datetime]] = (),
    ) -> MeterReading:
        tags = json.dumps(list(contract_tags))
        span = (utc_text(start, "meter start"), utc_text(end, "meter end"))
        read, count_unique = _READ_BUCKETS, _COUNT_UNIQUE
        params: tuple[str, ...] = (customer_id, metric, tags, *span)
        if untagged_within:
            read, count_unique = _READ_BUCKETS_WITHIN, _COUNT_UNIQUE_WITHIN
            windows = json.dumps([[utc_text(lo, "window start"), utc_text(hi, "window end")]
                                  for lo, hi in untagged_within])
            params = (customer_id, metric, tags, windows, *span)
        # One read transaction: both queries see the same snapshot.
        with self.datastore.transaction(commit=False) as c:
            c.execute(read, params)
            rows = c.fetchall()
            uniques = (0, 0, None)
            if unique_property is not None:
                c.execute(count_unique,
                          (*params, unique_property, uncounted_property(unique_property)))
                uniques = tuple(c.fetchone())
        if not rows:
            return MeterReading()
        with exact_decimals():
            total = _bucket(rows[0])
            for row in rows[1:]:
                total = total.merge(_bucket(row))
        return MeterReading(
            quantity_sum=total.quantity_sum,
            event_count=total.event_count,
            quantity_max=total.quantity_max,
            latest_quantity=total.latest_quantity,
            unique_count=uniques[0],
            revision=max(row["revision"] for row in rows),
            uncounted=uniques[1],
            uncounted_first=uniques[2],
        )

    def read_meters(self, requests: Sequence[MeterRequest]) -> list[MeterReading]:
        # A local file: a read costs no round trip, so one at a time is as good.
        return [
            self.read_meter(r.customer_id, r.metric, r.contract_tags, r.start, r.end,
                            r.unique_property, r.untagged_within)
            for r in requests
        ]

    def changed_buckets(
        self,
        customer_id: str,
        metric: str,
        contract_tags: Sequence[str],
        since_revision: int,
        before: datetime,
    ) -> list[datetime]:
        params = (
            customer_id,
            metric,
            since_revision,
            json.dumps(list(contract_tags)),
            utc_text(before, "changed buckets before"),
        )
        with self.datastore.transaction(commit=False) as c:
            c.execute(_CHANGED_BUCKETS, params)
            return [datetime.fromisoformat(row[0]) for row in c.fetchall()]

    def contract_ids(self, after: str | None, limit: int) -> list[str]:
        statement = "SELECT contract_id FROM contract_index"
        params: list[Any] = []
        if after is not None:
            statement += " WHERE contract_id > ?"
            params.append(after)
        statement += " ORDER BY contract_id LIMIT ?"
        params.append(limit)
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, params)
            return [row[0] for row in c.fetchall()]

    def customer_contract_ids(self, customer_ids: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        with self.datastore.transaction(commit=False) as c:
            c.execute(_CUSTOMER_CONTRACTS, (json.dumps(list(customer_ids)),))
            for row in c.fetchall():
                found.setdefault(row[0], []).append(row[1])
        return found

    def metered_usage(
        self, customer_ids: Sequence[str],
        since: Mapping[tuple[str, str], datetime] | None = None,
    ) -> dict[str, dict[str, MeteredUsage]]:
        bounded = bounded_to(customer_ids, since)
        with self.datastore.transaction(commit=False) as c:
            c.execute(_METERED_USAGE, (json.dumps(list(customer_ids)),))
            rows = [row for row in c.fetchall() if (row[0], row[1]) not in bounded]
            if bounded:
                c.execute(_METERED_USAGE_SINCE, (json.dumps([
                    [customer, metric, utc_text(instant, "acknowledged through")]
                    for (customer, metric), instant in bounded.items()]),))
                rows.extend(c.fetchall())
        return metered_usage(
            [(customer_id, metric, tag, events, datetime.fromisoformat(first),
              datetime.fromisoformat(last))
             for customer_id, metric, tag, events, first, last in rows], bounded)

    def usage_without_contract(self) -> list[UsageWithoutContract]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(_WITHOUT_CONTRACT)
            rows = c.fetchall()
        with exact_decimals():
            return usage_without_contract(
                (customer, metric, datetime.fromisoformat(start), events, Decimal(quantity),
                 datetime.fromisoformat(latest))
                for customer, metric, start, events, quantity, latest in rows)

    def events_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        statement = (
            f"SELECT originator_id, originator_version, topic, state FROM {self.events_table_name}"
            " WHERE originator_id IN (SELECT value FROM json_each(?))"
            " ORDER BY originator_id, originator_version"
        )
        found: dict[UUID, list[StoredEvent]] = {}
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, (json.dumps([i.hex for i in originator_ids]),))
            for stored in map(_stored_event, c.fetchall()):
                found.setdefault(cast(UUID, stored.originator_id), []).append(stored)
        return found

    @cached_property
    def _indexed_events(self) -> dict[str, str]:
        """Each indexed topic's query, by topic."""
        return {topic: _INDEXED_EVENTS.format(events=self.events_table_name,
                                              topic_is=topic_is(topic))
                for topic in INDEXED_TOPICS.values()}

    def indexed_events(self, topic: str) -> list[StoredEvent]:
        statement = indexed_statement(self._indexed_events, topic)
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement)
            return [_stored_event(row) for row in c.fetchall()]

    def received_messages(self, message_ids: Sequence[str]) -> dict[str, str]:
        if not message_ids:
            return {}
        with self.datastore.transaction(commit=False) as c:
            c.execute(_RECEIVED_MESSAGES, (json.dumps(list(message_ids)),))
            return {row[0]: row[1] for row in c.fetchall()}

    def first_versions(self, originator_ids: Sequence[UUID]) -> dict[UUID, StoredEvent]:
        statement = (
            f"SELECT originator_id, originator_version, topic, state FROM {self.events_table_name}"
            " WHERE originator_version = 1"
            " AND originator_id IN (SELECT value FROM json_each(?))"
        )
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, (json.dumps([i.hex for i in originator_ids]),))
            return {cast(UUID, stored.originator_id): stored
                    for stored in map(_stored_event, c.fetchall())}


def _stored_event(row: Any) -> StoredEvent:
    return StoredEvent(
        originator_id=UUID(row["originator_id"]),
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=row["state"],
    )


KeyRow = tuple[str, str, str, str]  # customer_id, metric, contract_tag, bucket_start text


@dataclass(frozen=True)
class _SQLiteBatch:
    """A batch with its keys, times and unique values already as the text SQLite stores.

    Encoded before the transaction: only the merge with the stored buckets needs the lock.
    """

    deltas: dict[KeyRow, MeterBucket]
    keys_json: str
    uniques: list[tuple[str, str, str, str, str, str]]
    contracts: list[tuple[str, str]]
    messages: list[tuple[str, str]]

    @classmethod
    def of(cls, batch: StoreBatch) -> _SQLiteBatch:
        deltas = {_key_row(key): delta for key, delta in batch.buckets.items()}
        uniques = [(*row[:5], utc_text(row[5], "bucket_start")) for row in batch.uniques()]
        return cls(deltas, json.dumps(list(deltas)), uniques, batch.contracts, batch.messages)


def _merged_rows(c: SQLiteCursor, batch: _SQLiteBatch, revision: int) -> list[tuple[Any, ...]]:
    """The batch's buckets merged into the stored ones: to be called under the write lock."""
    c.execute(_SELECT_BUCKETS_FOR_KEYS, (batch.keys_json,))
    stored = {tuple(row[:4]): _bucket(row) for row in c.fetchall()}
    rows = []
    with exact_decimals():
        for key, delta in batch.deltas.items():
            old = stored.get(key)
            merged = delta if old is None else old.merge(delta)
            rows.append((*key, *_bucket_row(merged), revision))
    return rows


def _key_row(key: MeterKey) -> KeyRow:
    return (key.customer_id, key.metric, key.contract_tag, utc_text(key.bucket_start, "bucket"))


def _bucket_row(b: MeterBucket) -> tuple[str, int, str, str, str, str]:
    return (
        str(b.quantity_sum),
        b.event_count,
        str(b.quantity_max),
        utc_text(b.latest_at, "latest_at"),
        b.latest_event_id,
        str(b.latest_quantity),
    )


def _bucket(row: Any) -> MeterBucket:
    return MeterBucket(
        quantity_sum=Decimal(row["quantity_sum"]),
        event_count=row["event_count"],
        quantity_max=Decimal(row["quantity_max"]),
        latest_at=datetime.fromisoformat(row["latest_at"]),
        latest_event_id=row["latest_event_id"],
        latest_quantity=Decimal(row["latest_quantity"]),
    )


class SQLiteBillingFactory(library.SQLiteFactory):
    """The library's SQLite factory, whose application recorder is the billing store."""

    process_recorder_class = SQLiteBillingRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        refuse_opaque_state(self.env)

    def application_recorder(self) -> SQLiteBillingRecorder:
        recorder = SQLiteBillingRecorder(datastore=self.datastore)
        if must_exist(self.env):
            require_store(self.datastore.pool.db_name, recorder.events_table_name)
        if self.env_create_table():
            recorder.create_table()
        return recorder


def require_store(db_name: str, events_table: str) -> None:
    """NoStore unless the database holds billcycle's events table. Asked through a read-only
    connection of its own: the store's pool would make a missing file, and turn an empty one
    into a database (its journal mode)."""
    if library.SQLiteConnectionPool.detect_memory_mode(db_name):
        raise NoStore("in memory: a new, empty database at every open")
    if not os.path.exists(db_name):
        raise NoStore("no such file")
    try:
        with closing(sqlite3.connect(f"file:{quote(db_name)}?mode=ro", uri=True,
                                     timeout=float(LOCK_TIMEOUT_SECONDS))) as conn:
            found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 (events_table,)).fetchone()
    except sqlite3.OperationalError as error:  # unreadable, locked: not a question of what it holds
        raise OperationalError(str(error)) from error
    except sqlite3.DatabaseError as error:  # "file is not a database"
        raise NoStore(str(error)) from error
    if found is None:
        raise NoStore("no billcycle tables")
