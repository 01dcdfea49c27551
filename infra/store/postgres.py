"""PostgreSQL store: the library's process recorder plus meters and the contract index.

Selected with PERSISTENCE_MODULE=infra.store.postgres (see infra/store/url.py). Meters are
combined in SQL on `numeric` columns, so sums stay exact however many saves add to a bucket.
Recorded usage batches wait in the meter backlog and are folded by the server, from the stored
events, in `update_meters`: not in the saving transaction, which holds the events table's lock.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec, Protocol, TypeVar, cast
from uuid import UUID
from weakref import WeakSet

# The module, not the class: PERSISTENCE_MODULE=infra.store.postgres must find exactly one
# factory class here.
import eventsourcing.postgres as library
import psycopg
import psycopg_pool
from eventsourcing.persistence import (
    AggregateRecorder,
    DataError,
    InterfaceError,
    Notification,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresDatastore,
    PostgresProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, retry
from psycopg import Connection, Cursor
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier

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
    MeterReading,
    MeterRequest,
    uncounted_property,
)
from infra.store import store_format
from infra.store.batch import (
    LEGACY_RECEIPT_TOPICS_SQL,
    StoreBatch,
    indexed_statement,
    record_unique_rows,
    recorded_usage,
    refuse_opaque_state,
    require_aware,
    take_batch,
    topic_is,
    uncounted_rows,
    unique_aggregates,
    unique_rows,
    usage_unique_rows,
)
from infra.store.url import NoStore, must_exist

P = ParamSpec("P")
R = TypeVar("R")

# The row of counted_properties that stands for every property.
ALL_PROPERTIES = "*"


def _retry(method: Callable[P, R]) -> Callable[P, R]:
    """Retry on a dropped connection, as the library's own reads do (keeps the signature)."""
    decorate = retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    return cast(Callable[P, R], decorate(_data_faults_told(method)))


def _data_faults_told(method: Callable[P, R]) -> Callable[P, R]:
    """A value over one of the server's limits (an index entry's size) is a DataError, as a
    value it cannot hold is: the library makes it an OperationalError, which a caller takes
    for an outage and retries, or waits on, for ever."""
    @functools.wraps(method)
    def told(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except OperationalError as error:
            if isinstance(error.__cause__, psycopg.errors.ProgramLimitExceeded):
                raise DataError(str(error)) from error.__cause__
            raise
    return told


class Waits(Protocol):
    """What names a wait while it lasts (consumers.patience.Patience)."""

    slow: float  # a wait this long is named

    def say(self, text: str) -> None: ...

    def watch(self, what: str, since: float | None = None) -> AbstractContextManager[bool]:
        ...  # the wait counted from `since`; True when no other wait of its thread is named


def tell_connection_waits(datastore: PostgresDatastore, what: str, waits: Waits) -> None:
    """Have `waits` name every wait of this store for a connection (PostgreSQL stopped or
    restarting) while it lasts, and say when the database answers again.

    The pool waits up to its timeout for a connection, then the store's retries (and the
    library's) ask again: a wait is counted from the first of the attempts that failed in a
    row, and the error of the last says how long that was.
    """
    pool = datastore.pool
    getconn = pool.getconn
    failing_since: dict[int, float] = {}
    back_said_at = [0.0]  # an outage's end is said once, by the first thread through

    def watched(timeout: float | None = None) -> Any:
        thread = threading.get_ident()
        since = failing_since.pop(thread, time.monotonic())
        try:
            with waits.watch(what, since) as outermost:
                connection = getconn(timeout)
        except psycopg_pool.PoolTimeout as error:
            failing_since[thread] = since
            raise psycopg_pool.PoolTimeout(
                f"no connection to {what} for {time.monotonic() - since:.0f}s") from error
        now = time.monotonic()
        if outermost and now - since >= waits.slow and since > back_said_at[0]:
            back_said_at[0] = now
            waits.say(f"{what} is back (after {now - since:.0f}s)")
        return connection

    pool.getconn = watched  # type: ignore[method-assign]


# latest_event_id and contract_id compare byte-wise ("C"), as Python compares str, whatever
# the database's default collation: the SQL combine must pick the same latest event as
# MeterBucket.merge, and contract paging must not depend on the server's locale.
_CREATE_TABLES = (
    store_format.CREATE_TABLE.format(prefix="{schema}."),
    "CREATE TABLE IF NOT EXISTS {schema}.usage_buckets ("
    " customer_id text NOT NULL, metric text NOT NULL, contract_tag text NOT NULL,"
    " bucket_start timestamptz NOT NULL,"
    " quantity_sum numeric NOT NULL, event_count bigint NOT NULL, quantity_max numeric NOT NULL,"
    ' latest_at timestamptz NOT NULL, latest_event_id text COLLATE "C" NOT NULL,'
    " latest_quantity numeric NOT NULL, revision bigint NOT NULL,"
    " PRIMARY KEY (customer_id, metric, contract_tag, bucket_start))",
    "CREATE INDEX IF NOT EXISTS usage_buckets_revision_idx"
    " ON {schema}.usage_buckets (customer_id, metric, revision)",
    "CREATE TABLE IF NOT EXISTS {schema}.usage_unique ("
    " customer_id text NOT NULL, metric text NOT NULL, contract_tag text NOT NULL,"
    " property text NOT NULL, value text NOT NULL, bucket_start timestamptz NOT NULL,"
    " PRIMARY KEY (customer_id, metric, contract_tag, property, value, bucket_start))",
    # Every message id ingest accepted, with its content fingerprint: the duplicate check
    # reads it, and its primary key makes an id count once ever.
    "CREATE TABLE IF NOT EXISTS {schema}.received_messages ("
    " message_id text PRIMARY KEY, fingerprint text NOT NULL)",
    # A store written before usage was batched keeps its message ids in the log only (one
    # UsageEvent or MessageReceipt per message): copied here while the table is empty, so an
    # old id sent again is still a duplicate. Once it has rows the NOT EXISTS is a one-time
    # false filter and nothing is scanned.
    "INSERT INTO {schema}.received_messages"
    " SELECT s ->> 'message_id', s ->> 'fingerprint'"
    " FROM (SELECT convert_from(state, 'UTF8')::jsonb AS s FROM {schema}.{events}"
    "  WHERE topic IN (" + LEGACY_RECEIPT_TOPICS_SQL + ")"
    "  AND NOT EXISTS (SELECT FROM {schema}.received_messages)) legacy"
    " ON CONFLICT DO NOTHING",
    # The usage properties whose distinct values some contract counts (unique_count): only
    # theirs go into usage_unique. Created with the row "*" (every property, as before) in a
    # store that already holds events, whose contracts were saved without telling it.
    "DO $$ BEGIN"
    " IF to_regclass('{schema}.counted_properties') IS NULL THEN"
    "  CREATE TABLE {schema}.counted_properties (property text PRIMARY KEY);"
    "  IF EXISTS (SELECT FROM {schema}.{events}) THEN"
    "   INSERT INTO {schema}.counted_properties VALUES ('" + ALL_PROPERTIES + "');"
    "  END IF;"
    " END IF;"
    " END $$",
    # The meter backlog: usage batches recorded but not yet folded into usage_buckets, each
    # with the revision its buckets take (see `update_meters`).
    "CREATE TABLE IF NOT EXISTS {schema}.meter_backlog ("
    " notification_id bigint PRIMARY KEY, revision bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {schema}.contract_index ("
    ' contract_id text COLLATE "C" PRIMARY KEY, customer_id text NOT NULL)',
    "CREATE INDEX IF NOT EXISTS contract_index_customer_idx"
    " ON {schema}.contract_index (customer_id, contract_id)",
)

# An indexed topic's events (domain.ports.INDEXED_TOPICS), which indexed_events reads. Partial:
# the events a run writes by the hundred thousand have no entry in it. A store from before it
# has it made with the tables, at its first open, by one pass over the events table.
_INDEX_TOPIC = (
    "CREATE INDEX IF NOT EXISTS {index} ON {schema}.{events} (notification_id) WHERE {topic_is}"
)

_LATER = "(EXCLUDED.latest_at, EXCLUDED.latest_event_id) > (b.latest_at, b.latest_event_id)"

# The stored events as four plain arrays, sent in binary (%b: psycopg's C dumpers; with %s it
# builds text arrays, escaping each element in Python; the library's array of composites is
# built and escaped in Python too). RETURNING keeps the rows' order, as the library's unnest
# does.
_INSERT_EVENTS = (
    "INSERT INTO {schema}.{events} (originator_id, originator_version, topic, state)"
    " SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[])"
    " RETURNING notification_id"
)

# A batch's meter rows are copied into these (per session, emptied at each commit or
# rollback), then upserted into the meters by one statement per table. Decimals travel as
# numeric: exact.
_CREATE_STAGES = (
    "CREATE TEMP TABLE IF NOT EXISTS billcycle_stage_buckets ("
    " customer_id text, metric text, contract_tag text, bucket_start timestamptz,"
    " quantity_sum numeric, event_count bigint, quantity_max numeric, latest_at timestamptz,"
    ' latest_event_id text COLLATE "C", latest_quantity numeric) ON COMMIT DELETE ROWS',
    "CREATE TEMP TABLE IF NOT EXISTS billcycle_stage_unique ("
    " customer_id text, metric text, contract_tag text, property text, value text,"
    " bucket_start timestamptz) ON COMMIT DELETE ROWS",
)
_BUCKET_TYPES = ("text", "text", "text", "timestamptz", "numeric", "int8", "numeric",
                 "timestamptz", "text", "numeric")
_UNIQUE_TYPES = ("text", "text", "text", "text", "text", "timestamptz")
_COPY_STAGE_BUCKETS = "COPY billcycle_stage_buckets FROM STDIN (FORMAT BINARY)"
_COPY_STAGE_UNIQUES = "COPY billcycle_stage_unique FROM STDIN (FORMAT BINARY)"
# Straight into the table: an id another writer committed meanwhile must fail the transaction.
_COPY_MESSAGES = (
    "COPY {schema}.received_messages (message_id, fingerprint) FROM STDIN (FORMAT BINARY)"
)

# How a bucket delta combines with the stored bucket (MeterBucket.merge).
_COMBINE = (
    " quantity_sum = b.quantity_sum + EXCLUDED.quantity_sum,"
    " event_count = b.event_count + EXCLUDED.event_count,"
    " quantity_max = GREATEST(b.quantity_max, EXCLUDED.quantity_max),"
    f" latest_at = CASE WHEN {_LATER} THEN EXCLUDED.latest_at ELSE b.latest_at END,"
    f" latest_event_id = CASE WHEN {_LATER} THEN EXCLUDED.latest_event_id"
    " ELSE b.latest_event_id END,"
    f" latest_quantity = CASE WHEN {_LATER} THEN EXCLUDED.latest_quantity"
    " ELSE b.latest_quantity END,"
    # The greater: a fold of the backlog may come after a later save wrote the bucket.
    " revision = GREATEST(b.revision, EXCLUDED.revision)"
)

# Both writers of buckets: the saving transaction's upsert and the backlog's fold.
_INTO_BUCKETS = (
    "INSERT INTO {schema}.usage_buckets AS b (customer_id, metric, contract_tag, bucket_start,"
    " quantity_sum, event_count, quantity_max, latest_at, latest_event_id, latest_quantity,"
    " revision)"
)
_COMBINED = (
    " ON CONFLICT (customer_id, metric, contract_tag, bucket_start) DO UPDATE SET" + _COMBINE
)

_UPSERT_BUCKETS = (
    _INTO_BUCKETS
    + " SELECT r.*, (SELECT max(notification_id) FROM {schema}.{events})"
    " FROM billcycle_stage_buckets AS r"
    + _COMBINED
)

_MARK_UNCOUNTED = (
    "INSERT INTO {schema}.usage_unique VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_INSERT_UNIQUES = (
    "INSERT INTO {schema}.usage_unique SELECT * FROM billcycle_stage_unique"
    " ON CONFLICT DO NOTHING"
)

_ADD_BACKLOG = (
    "INSERT INTO {schema}.meter_backlog SELECT unnest(%b::bigint[]), %b::bigint"
)
# The oldest entries of the backlog, locked in order (two folds never wait on each other in
# opposite orders) and removed: a concurrent fold waits for them, then skips them.
_TAKE_BACKLOG = (
    "DELETE FROM {schema}.meter_backlog WHERE notification_id IN ("
    " SELECT notification_id FROM {schema}.meter_backlog WHERE notification_id <= %s"
    " ORDER BY notification_id LIMIT %s FOR UPDATE)"
    " RETURNING notification_id, revision"
)
# Every record of the taken usage batches folded into its bucket, on the server, from the
# stored events themselves: MeterBucket.merge in SQL. The records are UsageRecord lists:
# message id, fingerprint, customer, metric, quantity (a Decimal's str), occurred_at (ISO 8601
# with offset), contract id ("" for none), properties. date_bin is bucket_start; "latest" is
# the greatest (occurred_at, message id), ids compared byte-wise as Python compares str.
_FOLD_BACKLOG = (
    _INTO_BUCKETS
    + " SELECT DISTINCT ON (customer_id, metric, contract_tag, bucket_start)"
    " customer_id, metric, contract_tag, bucket_start, sum(quantity) OVER w, count(*) OVER w,"
    " max(quantity) OVER w, at, event_id, quantity, max(revision) OVER w"
    " FROM (SELECT t.revision, r ->> 2 AS customer_id, r ->> 3 AS metric,"
    "  r ->> 6 AS contract_tag,"
    "  date_bin('15 minutes', (r ->> 5)::timestamptz, timestamptz '1970-01-01 00:00:00+00')"
    "  AS bucket_start,"
    '  (r ->> 5)::timestamptz AS at, (r ->> 0) COLLATE "C" AS event_id,'
    "  (r ->> 4)::numeric AS quantity"
    "  FROM unnest(%b::bigint[], %b::bigint[]) AS t(notification_id, revision)"
    "  JOIN {schema}.{events} e ON e.notification_id = t.notification_id"
    "  CROSS JOIN LATERAL jsonb_array_elements(convert_from(e.state, 'UTF8')::jsonb -> 'records')"
    "  AS r) AS u"
    " WINDOW w AS (PARTITION BY customer_id, metric, contract_tag, bucket_start)"
    " ORDER BY customer_id, metric, contract_tag, bucket_start, at DESC, event_id DESC"
    + _COMBINED
)
_BACKLOG_HEAD = "SELECT max(notification_id) AS head FROM {schema}.meter_backlog"

_LZ4_AVAILABLE = (
    "SELECT 'lz4' = ANY(enumvals) AS available FROM pg_settings"
    " WHERE name = 'default_toast_compression'"
)
_COUNTED = "SELECT property FROM {schema}.counted_properties"
_ADD_COUNTED = (
    "INSERT INTO {schema}.counted_properties SELECT unnest(%b::text[]) ON CONFLICT DO NOTHING"
)
_USAGE_BATCHES = "SELECT state FROM {schema}.{events} WHERE topic = %s"

_INSERT_CONTRACTS = (
    "INSERT INTO {schema}.contract_index"
    " SELECT * FROM unnest(%b::text[], %b::text[])"
    " ON CONFLICT DO NOTHING"
)

# One primary-key probe per id, whatever the table's size and statistics. With
# `message_id = ANY(ids)` the planner chose a sequential scan (parallel from about 300,000
# rows) until the table was large enough for the index: a batch of 2,000 new ids took 25 ms
# at 100,000 rows and up to 90 ms at 300,000, against 4-11 ms probed. LIMIT 1 keeps the
# subquery from being flattened into a hash join, which scans the table too.
_RECEIVED_MESSAGES = (
    "SELECT r.message_id, r.fingerprint FROM unnest(%b::text[]) AS i(message_id)"
    " CROSS JOIN LATERAL (SELECT message_id, fingerprint FROM {schema}.received_messages r"
    "  WHERE r.message_id = i.message_id LIMIT 1) r"
)

_BUCKETS_WHERE = (
    " WHERE customer_id = %(customer_id)s AND metric = %(metric)s"
    " AND contract_tag = ANY(%(tags)s::text[])"
    " AND bucket_start >= %(start)s AND bucket_start < %(end)s"
)

# The aggregates of the unique values read (unique_aggregates), byte-wise as Python orders str.
_UNIQUES = unique_aggregates('value COLLATE "C"', "chr")

# One statement, so the buckets and the unique values are read from one snapshot.
_READ_METER = (
    "SELECT * FROM (SELECT coalesce(sum(quantity_sum), 0) AS quantity_sum,"
    " coalesce(sum(event_count), 0) AS event_count,"
    " coalesce(max(quantity_max), 0) AS quantity_max,"
    " coalesce((array_agg(latest_quantity ORDER BY latest_at DESC, latest_event_id DESC))[1], 0)"
    " AS latest_quantity,"
    " coalesce(max(revision), 0) AS revision"
    " FROM {schema}.usage_buckets" + _BUCKETS_WHERE + ") AS m,"
    " (SELECT " + _UNIQUES + " FROM {schema}.usage_unique" + _BUCKETS_WHERE
    + " AND property IN (%(property)s, %(uncounted_property)s)) AS q"
)

# The same with the untagged buckets within some windows besides (where an operator assigned
# part of a period's untagged usage to the contract reading it: rare, so read on its own).
_BUCKETS_WITHIN_WHERE = (
    " WHERE customer_id = %(customer_id)s AND metric = %(metric)s"
    " AND (contract_tag = ANY(%(tags)s::text[]) OR contract_tag = '' AND EXISTS ("
    "  SELECT FROM unnest(%(from)s::timestamptz[], %(to)s::timestamptz[]) AS w(lo, hi)"
    "  WHERE bucket_start >= w.lo AND bucket_start < w.hi))"
    " AND bucket_start >= %(start)s AND bucket_start < %(end)s"
)
_READ_METER_WITHIN = _READ_METER.replace(_BUCKETS_WHERE, _BUCKETS_WITHIN_WHERE)

# Many reads in one round trip: each request row is joined to its own aggregates.
_READ_METERS = (
    "SELECT r.i, m.*, q.*"
    " FROM json_to_recordset(%s::json) AS r(i int, customer_id text, metric text, tags text[],"
    "  start timestamptz, stop timestamptz, property text, uncounted_property text)"
    " CROSS JOIN LATERAL (SELECT coalesce(sum(quantity_sum), 0) AS quantity_sum,"
    "  coalesce(sum(event_count), 0) AS event_count,"
    "  coalesce(max(quantity_max), 0) AS quantity_max,"
    "  coalesce((array_agg(latest_quantity ORDER BY latest_at DESC, latest_event_id DESC))[1],"
    "  0) AS latest_quantity,"
    "  coalesce(max(revision), 0) AS revision"
    "  FROM {schema}.usage_buckets b"
    "  WHERE b.customer_id = r.customer_id AND b.metric = r.metric"
    "  AND b.contract_tag = ANY(r.tags) AND b.bucket_start >= r.start"
    "  AND b.bucket_start < r.stop) AS m"
    " CROSS JOIN LATERAL (SELECT " + _UNIQUES + " FROM {schema}.usage_unique u"
    "  WHERE u.customer_id = r.customer_id AND u.metric = r.metric"
    "  AND u.contract_tag = ANY(r.tags) AND u.bucket_start >= r.start"
    "  AND u.bucket_start < r.stop AND u.property IN (r.property, r.uncounted_property)) AS q"
    " ORDER BY r.i"
)

_CHANGED_BUCKETS = (
    "SELECT DISTINCT bucket_start FROM {schema}.usage_buckets"
    " WHERE customer_id = %s AND metric = %s AND revision > %s"
    " AND contract_tag = ANY(%s::text[]) AND bucket_start < %s"
    " ORDER BY bucket_start"
)

_CUSTOMER_CONTRACTS = (
    "SELECT customer_id, contract_id FROM {schema}.contract_index"
    " WHERE customer_id = ANY(%s) ORDER BY customer_id, contract_id"
)

# Usage events per customer, metric and contract tag, with the first and last bucket
# (`metered_usage` combines the tags; PostgreSQL sums bigint as numeric: cast back).
_METERED_USAGE = (
    "SELECT customer_id, metric, contract_tag, CAST(SUM(event_count) AS BIGINT),"
    " MIN(bucket_start), MAX(bucket_start) FROM {schema}.usage_buckets"
    " WHERE customer_id = ANY(%s) GROUP BY customer_id, metric, contract_tag"
)

# The same, from an instant per customer and metric on (the usage before it acknowledged).
_METERED_USAGE_SINCE = (
    "SELECT b.customer_id, b.metric, b.contract_tag, CAST(SUM(b.event_count) AS BIGINT),"
    " MIN(b.bucket_start), MAX(b.bucket_start) FROM {schema}.usage_buckets b"
    " JOIN unnest(%s::text[], %s::text[], %s::timestamptz[]) AS a(customer_id, metric, since)"
    " ON b.customer_id = a.customer_id AND b.metric = a.metric AND b.bucket_start >= a.since"
    " GROUP BY b.customer_id, b.metric, b.contract_tag"
)

# Meter buckets of customers without a contract (see UsageWithoutContract); as on SQLite.
_WITHOUT_CONTRACT = (
    "SELECT customer_id, metric, bucket_start, event_count, quantity_sum, latest_at"
    " FROM {schema}.usage_buckets b WHERE NOT EXISTS"
    " (SELECT FROM {schema}.contract_index c WHERE c.customer_id = b.customer_id)"
    " ORDER BY customer_id, metric, bucket_start"
)

_FIRST_VERSIONS = (
    "SELECT originator_id, originator_version, topic, state FROM {schema}.{events}"
    " WHERE originator_version = 1 AND originator_id = ANY(%s)"
)

# A page of the log, as the library's select_notifications reads it (its WHERE built there).
_NOTIFICATIONS = (
    "SELECT notification_id, originator_id, originator_version, topic, state"
    " FROM {{schema}}.{{events}}{where} ORDER BY notification_id LIMIT %s"
)

_EVENTS_OF = (
    "SELECT originator_id, originator_version, topic, state FROM {schema}.{events}"
    " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
)

_INDEXED_EVENTS = (
    "SELECT originator_id, originator_version, topic, state FROM {schema}.{events}"
    " WHERE {topic_is} ORDER BY notification_id"
)


class PostgresBillingRecorder(PostgresProcessRecorder, BillingStore):
    """Events, tracking, meters and contract links, all in the library's insert transaction."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        events_table_name: str = "stored_events",
        tracking_table_name: str = "notification_tracking",
    ) -> None:
        super().__init__(
            datastore,
            events_table_name=events_table_name,
            tracking_table_name=tracking_table_name,
        )
        # Appended to the library's own statements, so CREATE_TABLE makes a fresh database
        # complete with no migration step.
        self.sql_create_statements.extend(self._sql(s) for s in _CREATE_TABLES)
        self.sql_create_statements.extend(
            self._indexed_sql(_INDEX_TOPIC, topic, index=f"{self.events_table_name}_{name}_idx")
            for name, topic in INDEXED_TOPICS.items())
        self._insert_events_arrays = self._sql(_INSERT_EVENTS)
        self._upsert_buckets = self._sql(_UPSERT_BUCKETS)
        self._insert_uniques = self._sql(_INSERT_UNIQUES)
        self._insert_contracts = self._sql(_INSERT_CONTRACTS)
        self._counted = self._sql(_COUNTED)
        self._add_counted = self._sql(_ADD_COUNTED)
        self._usage_batches = self._sql(_USAGE_BATCHES)
        self._create_stages = [self._sql(s) for s in _CREATE_STAGES]
        self._copy_stage_buckets = self._sql(_COPY_STAGE_BUCKETS)
        self._copy_stage_uniques = self._sql(_COPY_STAGE_UNIQUES)
        self._copy_messages = self._sql(_COPY_MESSAGES)
        self._add_backlog = self._sql(_ADD_BACKLOG)
        self._take_backlog = self._sql(_TAKE_BACKLOG)
        self._fold_backlog = self._sql(_FOLD_BACKLOG)
        self._backlog_head = self._sql(_BACKLOG_HEAD)
        # Connections (sessions) whose temp tables exist (and TOAST compression is set).
        self._staged: WeakSet[Connection[DictRow]] = WeakSet()
        self._lz4: bool | None = None  # whether the server knows lz4; asked once
        self._received_messages = self._sql(_RECEIVED_MESSAGES)
        self._read_meter = self._sql(_READ_METER)
        self._read_meter_within = self._sql(_READ_METER_WITHIN)
        self._changed_buckets = self._sql(_CHANGED_BUCKETS)
        self._read_meters = self._sql(_READ_METERS)
        self._customer_contracts = self._sql(_CUSTOMER_CONTRACTS)
        self._without_contract = self._sql(_WITHOUT_CONTRACT)
        self._metered_usage = self._sql(_METERED_USAGE)
        self._metered_usage_since = self._sql(_METERED_USAGE_SINCE)
        self._first_versions = self._sql(_FIRST_VERSIONS)
        self._events_of = self._sql(_EVENTS_OF)
        self._indexed_events = {topic: self._indexed_sql(_INDEXED_EVENTS, topic)
                                for topic in INDEXED_TOPICS.values()}
        self._notifications: dict[str, Composed] = {}  # by WHERE clause
        # The library's lock statements and its NOTIFY, sent as one query (no parameters: the
        # simple protocol takes several statements): one wait for the server, and for the
        # interpreter lock after it, instead of three.
        self._lock_and_notify = SQL("; ").join([
            *self.lock_table_statements,
            SQL("NOTIFY {0}").format(Identifier(self.channel_name)),
        ])

    def keep_store_format(self) -> None:
        """Refuse a store a later billcycle wrote; record this version's format (store_format)."""
        with self.datastore.transaction(commit=True) as curs:
            def execute(statement: str) -> Any:
                curs.execute(self._sql(statement))
                row = curs.fetchone() if curs.description else None
                return None if row is None else tuple(row.values())  # rows are dicts here
            store_format.keep_store_format(execute, prefix="{schema}.",
                                           mark_uncounted=lambda: self._mark_uncounted(curs))

    def _mark_uncounted(self, curs: Cursor[DictRow]) -> None:
        """The uncounted marks of the counted properties' values in the usage stored before
        the store's format 1 (store_format), which ingest did not keep."""
        curs.execute(self._counted)
        counted = frozenset(row["property"] for row in curs.fetchall())
        if not counted:
            return
        names = None if ALL_PROPERTIES in counted else counted
        marks: set[Row] = set()
        # Server-side: a store's usage is read a page of batches at a time.
        with curs.connection.cursor(name="billcycle_uncounted_backfill") as stored:
            stored.itersize = 100
            stored.execute(self._usage_batches, (USAGE_BATCH_RECORDED_TOPIC,))
            for row in store_format.upgrading(stored):
                marks |= uncounted_rows(json.loads(bytes(row["state"]))["records"], names)
        if marks:
            curs.executemany(self._sql(_MARK_UNCOUNTED), marks)

    def _sql(self, template: str) -> Composed:
        return SQL(template).format(
            schema=Identifier(self.datastore.schema),
            events=Identifier(self.events_table_name),
            id_type=Identifier(self.datastore.originator_id_type),
        )

    def _indexed_sql(self, template: str, topic: str, **names: str) -> Composed:
        """`template` of an indexed topic: its condition as a literal (batch.topic_is)."""
        return SQL(template).format(
            schema=Identifier(self.datastore.schema),
            events=Identifier(self.events_table_name),
            topic_is=SQL(topic_is(topic)),
            **{key: Identifier(name) for key, name in names.items()},
        )

    # --- writing ----------------------------------------------------------------------------

    @_retry
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's PostgresProcessRecorder.insert_events, in one transaction without
        pipeline mode, so that the meter rows and message ids can go in by binary COPY.

        As in the library: the tracking row first (its `_insert_events` hook; a position
        recorded already fails on its primary key), then the events table locked (EXCLUSIVE,
        until commit) so that notification ids follow commit order, NOTIFY, and the events
        inserted (a version taken already fails on the primary key); psycopg's errors become
        the library's (IntegrityError...) in `get_connection`. Unlike the library's, any
        failure here, in Python or on the server, rolls the whole transaction back.
        """
        batch, rest = take_batch(stored_events, kwargs)
        rows = _PgBatch.of(batch) if batch is not None else None
        usage = recorded_usage(stored_events)
        notification_ids: list[int] | None = None
        with self.datastore.get_connection() as conn, conn.transaction(), \
                conn.cursor() as curs:
            # Session set-up, in this transaction: undone with it if it rolls back, so the
            # session counts as set up only once it has committed (below).
            new_session = (rows is not None or bool(usage)) and conn not in self._staged
            if new_session:
                self._set_up_session(curs)
            self._insert_events(curs, stored_events, **rest)
            if stored_events:
                curs.execute(self._lock_and_notify)
                curs.execute(self._insert_events_arrays, _event_columns(stored_events),
                             binary=True)
                notification_ids = [row["notification_id"] for row in curs.fetchall()]
                if usage:
                    # Folded by `update_meters`, with the revision a bucket written in this
                    # transaction takes: the highest notification id it sees, its own.
                    curs.execute(self._add_backlog, (
                        [notification_ids[i] for i in usage], max(notification_ids),
                    ), binary=True)
                if rows is not None or usage:
                    self._write_batch(conn, curs, rows, [stored_events[i] for i in usage])
        if new_session:
            self._staged.add(conn)
        return notification_ids

    def _set_up_session(self, curs: Cursor[DictRow]) -> None:
        """The temp tables the batch rows are staged in; lz4 for the events' TOAST.

        A usage batch's event is about 350 kB of JSON, compressed when stored: pglz (the
        default) costs the server about 16 ms per event, lz4 7 ms for the same size. Stored
        values keep their own method, so either kind reads back the same. Only where the
        server was built with lz4.
        """
        for statement in self._create_stages:
            curs.execute(statement)
        if self._lz4 is None:
            curs.execute(_LZ4_AVAILABLE)
            found = curs.fetchone()
            self._lz4 = bool(found and found["available"])
        if self._lz4:
            curs.execute("SET default_toast_compression = 'lz4'")

    def _write_batch(self, conn: Connection[DictRow], curs: Cursor[DictRow],
                     batch: _PgBatch | None, usage: list[StoredEvent]) -> None:
        # Each bucket's revision is max(notification_id) of the events table as this same
        # transaction sees it after its own insert. Because the table lock serialises writers
        # until commit, every transaction that committed earlier has lower ids and every one
        # that commits later has higher ids: revisions follow commit order exactly. A reader
        # that has seen revision R and asks for buckets with revision > R can never miss a
        # change that commits later with a lower number; that makes late usage exact.
        #
        # Rows go by binary COPY (psycopg formats them in C; arrays are dumped element by
        # element in Python): straight into received_messages, whose primary key must refuse
        # an id committed meanwhile, and through session temp tables for the upserts.
        if batch is not None and batch.buckets:
            copy_rows(curs, self._copy_stage_buckets, _BUCKET_TYPES, batch.buckets)
            curs.execute(self._upsert_buckets)
        uniques = self._counted_uniques(conn, curs, batch, usage)
        if uniques:
            copy_rows(curs, self._copy_stage_uniques, _UNIQUE_TYPES, uniques)
            curs.execute(self._insert_uniques)
        if batch is not None and batch.messages:
            copy_rows(curs, self._copy_messages, ("text", "text"), batch.messages)
        if batch is not None and batch.contracts:
            curs.execute(self._insert_contracts, [list(c) for c in zip(*batch.contracts,
                                                                      strict=True)])

    def _counted_uniques(self, conn: Connection[DictRow], curs: Cursor[DictRow],
                         batch: _PgBatch | None, usage: list[StoredEvent]) -> list[Row]:
        """The usage_unique rows of counted properties of the batch's increments and recorded
        usage, and if its contract events count a property not counted before, every stored
        usage's rows of that property.

        Read after the events table is locked: a transaction that counted a property earlier
        has committed (this one writes its rows), one that counts it later reads this one's
        usage once it commits (and writes them). Unique values are written here, not by
        `update_meters`: they are few (only counted properties), and the backfill above reads
        the log as this transaction sees it.
        """
        counting = batch.counted if batch is not None else frozenset()
        if not (usage or counting or (batch is not None and batch.with_properties)):
            return []
        curs.execute(self._counted)
        counted = {row["property"] for row in curs.fetchall()}
        new = counting - counted
        names = None if ALL_PROPERTIES in counted else counted | new
        # Made here, not before the transaction: most properties are counted by no contract,
        # and a pass over the batch picking the few that are is cheaper than all their rows.
        uniques: list[Row] = []
        if names is None or names:
            found = usage_unique_rows(usage, names)
            if batch is not None:
                found.update(unique_rows(batch.store_batch.increments, names))
            uniques += found
        if new:
            curs.execute(self._add_counted, (sorted(new),), binary=True)
            uniques.extend(self._stored_uniques(conn, new))
        return uniques

    def _stored_uniques(self, conn: Connection[DictRow], names: frozenset[str]) -> list[Row]:
        """The usage_unique rows of properties `names` of every stored usage record (this
        transaction's included), made as ingest makes them. Once per property ever counted."""
        found: set[Row] = set()
        # Server-side: a store's usage is read a page of batches at a time.
        with conn.cursor(name="billcycle_counted_backfill") as stored:
            stored.itersize = 100
            stored.execute(self._usage_batches, (USAGE_BATCH_RECORDED_TOPIC,))
            for row in stored:
                found |= record_unique_rows(json.loads(bytes(row["state"]))["records"], names)
        return list(found)

    # --- folding usage into the meters -------------------------------------------------------

    @_retry
    def update_meters(self, most: int | None = None) -> int:
        """Fold every usage batch recorded so far into the meters (or the `most` oldest, a
        transaction's worth at least); the batches folded.

        Ingest leaves its usage batches in the meter backlog instead of folding them in its
        own transaction, which holds the lock every writer waits for: the server folds them
        here, from the stored events, a few batches per transaction. Each bucket takes the
        revision its batch was given when it committed, so revisions keep commit order and
        late usage stays exact. Reads after this return see every usage recorded before it
        began; concurrent calls fold each batch once (one waits for the other's batches).
        """
        folded = 0
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._backlog_head)
            found = curs.fetchone()
            head = found["head"] if found else None
            while head is not None:
                with conn.transaction():
                    curs.execute(self._take_backlog, (head, FOLD_BATCHES))
                    taken = curs.fetchall()
                    if taken:
                        curs.execute(self._fold_backlog, (
                            [row["notification_id"] for row in taken],
                            [row["revision"] for row in taken],
                        ), binary=True)
                        folded += len(taken)
                if len(taken) < FOLD_BATCHES or (most is not None and folded >= most):
                    break
        return folded

    # --- reading ----------------------------------------------------------------------------

    @_retry
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
        params = {
            "customer_id": customer_id,
            "metric": metric,
            "tags": list(contract_tags),
            "start": require_aware(start, "meter start"),
            "end": require_aware(end, "meter end"),
            "property": unique_property,
            "uncounted_property": uncounted_property(unique_property or ""),
            "from": [require_aware(lo, "window start") for lo, _ in untagged_within],
            "to": [require_aware(hi, "window end") for _, hi in untagged_within],
        }
        statement = self._read_meter_within if untagged_within else self._read_meter
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params)
            row = curs.fetchone()
        assert row is not None  # an aggregate without GROUP BY always returns a row
        return _reading(row)

    @_retry
    def read_meters(self, requests: Sequence[MeterRequest]) -> list[MeterReading]:
        if not requests:
            return []
        if any(r.untagged_within for r in requests):
            plain = [r for r in requests if not r.untagged_within]
            found = iter(self.read_meters(plain))
            return [
                self.read_meter(r.customer_id, r.metric, r.contract_tags, r.start, r.end,
                                r.unique_property, r.untagged_within)
                if r.untagged_within else next(found)
                for r in requests
            ]
        rows = json.dumps([
            {
                "i": i,
                "customer_id": r.customer_id,
                "metric": r.metric,
                "tags": list(r.contract_tags),
                "start": require_aware(r.start, "meter start").isoformat(),
                "stop": require_aware(r.end, "meter end").isoformat(),
                "property": r.unique_property,
                "uncounted_property": uncounted_property(r.unique_property or ""),
            }
            for i, r in enumerate(requests)
        ])
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._read_meters, (rows,))
            return [_reading(row) for row in curs.fetchall()]

    @_retry
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
            list(contract_tags),
            require_aware(before, "changed buckets before"),
        )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._changed_buckets, params)
            return [row["bucket_start"] for row in curs.fetchall()]

    @_retry
    def contract_ids(self, after: str | None, limit: int) -> list[str]:
        statement = SQL("SELECT contract_id FROM {schema}.contract_index").format(
            schema=Identifier(self.datastore.schema)
        )
        params: list[Any] = []
        if after is not None:
            statement += SQL(" WHERE contract_id > %s")
            params.append(after)
        statement += SQL(" ORDER BY contract_id LIMIT %s")
        params.append(limit)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params)
            return [row["contract_id"] for row in curs.fetchall()]

    @_retry
    def customer_contract_ids(self, customer_ids: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        if not customer_ids:
            return found
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._customer_contracts, (list(customer_ids),))
            for row in curs.fetchall():
                found.setdefault(row["customer_id"], []).append(row["contract_id"])
        return found

    @_retry
    def metered_usage(
        self, customer_ids: Sequence[str],
        since: Mapping[tuple[str, str], datetime] | None = None,
    ) -> dict[str, dict[str, MeteredUsage]]:
        if not customer_ids:
            return {}
        bounded = bounded_to(customer_ids, since)
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self._metered_usage, (list(customer_ids),))
            rows = [row for row in curs.fetchall() if (row[0], row[1]) not in bounded]
            if bounded:
                keys = list(bounded)
                curs.execute(self._metered_usage_since, (
                    [k[0] for k in keys], [k[1] for k in keys],
                    [require_aware(bounded[k], "acknowledged through") for k in keys]))
                rows.extend(curs.fetchall())
            return metered_usage(rows, bounded)

    @_retry
    def usage_without_contract(self) -> list[UsageWithoutContract]:
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self._without_contract)
            return usage_without_contract(curs.fetchall())

    @_retry
    def events_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        found: dict[UUID, list[StoredEvent]] = {}
        if not originator_ids:
            return found
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._events_of, (list(originator_ids),), binary=True)
            for row in curs.fetchall():
                found.setdefault(row["originator_id"], []).append(_stored_event(row))
        return found

    @_retry
    def indexed_events(self, topic: str) -> list[StoredEvent]:
        statement = indexed_statement(self._indexed_events, topic)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, binary=True)
            return [_stored_event(row) for row in curs.fetchall()]

    @_retry
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """The library's page of the log, with its results in binary: the states come as
        bytes, not as hex text for the server to write and psycopg to read back (half the
        CPU of both, per event a replay or a catch-up reads), and as tuples, not dicts."""
        where: list[str] = []
        params: list[Any] = []
        if start is not None:
            where.append("notification_id >= %s" if inclusive_of_start else "notification_id > %s")
            params.append(start)
        if stop is not None:
            where.append("notification_id <= %s")
            params.append(stop)
        if topics:
            where.append("topic = ANY(%s)")
            params.append(list(topics))
        condition = " WHERE " + " AND ".join(where) if where else ""
        statement = self._notifications.get(condition)
        if statement is None:
            statement = self._notifications[condition] = self._sql(
                _NOTIFICATIONS.format(where=condition))
        with self.datastore.get_connection() as conn, conn.cursor(
            binary=True, row_factory=tuple_row
        ) as curs:
            curs.execute(statement, [*params, limit], prepare=True)
            return [
                Notification(id=n, originator_id=o, originator_version=v, topic=t, state=state)
                for n, o, v, t, state in curs.fetchall()
            ]

    @_retry
    def received_messages(self, message_ids: Sequence[str]) -> dict[str, str]:
        if not message_ids:
            return {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._received_messages, (list(message_ids),), binary=True)
            return {row["message_id"]: row["fingerprint"] for row in curs.fetchall()}

    @_retry
    def first_versions(self, originator_ids: Sequence[UUID]) -> dict[UUID, StoredEvent]:
        if not originator_ids:
            return {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._first_versions, (list(originator_ids),), binary=True)
            return {row["originator_id"]: _stored_event(row) for row in curs.fetchall()}


def _stored_event(row: Any) -> StoredEvent:
    return StoredEvent(
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )


def _reading(row: Any) -> MeterReading:
    return MeterReading(
        quantity_sum=row["quantity_sum"],
        event_count=int(row["event_count"]),
        quantity_max=row["quantity_max"],
        latest_quantity=row["latest_quantity"],
        unique_count=row["unique_count"],
        revision=row["revision"],
        uncounted=row["uncounted"],
        uncounted_first=row["uncounted_first"],
    )


def copy_rows(curs: Cursor[Any], statement: Composed, types: Sequence[str],
              rows: Iterable[Sequence[Any]]) -> None:
    """Rows by binary COPY, their column types given: psycopg dumps every value in C instead
    of choosing a dumper per value (and formatting text rows in Python)."""
    with curs.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _event_columns(stored_events: Sequence[StoredEvent]) -> tuple[list[Any], ...]:
    """The stored events as the four arrays of _INSERT_EVENTS."""
    return (
        [e.originator_id for e in stored_events],
        [e.originator_version for e in stored_events],
        [e.topic for e in stored_events],
        [e.state for e in stored_events],
    )


Row = tuple[Any, ...]


@dataclass(frozen=True)
class _PgBatch:
    """A batch as rows for COPY, one list per table, built before the transaction."""

    buckets: list[Row]
    store_batch: StoreBatch  # for its unique values, made inside the transaction
    with_properties: bool  # whether any increment has a property
    contracts: list[tuple[str, str]]
    messages: list[tuple[str, str]]
    counted: frozenset[str]

    @classmethod
    def of(cls, batch: StoreBatch) -> _PgBatch:
        # MeterKey + MeterBucket is the row, in the table's column order (tuples joined in C).
        # Both times come from the usage's occurred_at: in UTC as parsed (nearly always), else
        # checked to be aware.
        buckets: list[Row] = []
        for key, b in batch.buckets.items():
            if key.bucket_start.tzinfo is not UTC or b.latest_at.tzinfo is not UTC:
                require_aware(key.bucket_start, "bucket_start")
                require_aware(b.latest_at, "latest_at")
            buckets.append(key + b)
        # Each unique row's bucket_start is the bucket_start of one of the keys checked above.
        with_properties = any(inc.properties for inc in batch.increments)
        return cls(buckets, batch, with_properties, batch.contracts, batch.messages,
                   batch.counted)


# Usage batches folded per transaction by `update_meters`: about 100,000 records at ingest's
# batch size, a few seconds of the server's work.
FOLD_BATCHES = 50

CREATE_TABLES_LOCK = 0x6269_6C6C_6379  # "billcy": the advisory lock key of table creation


class PostgresBillingFactory(library.PostgresFactory):
    """The library's PostgreSQL factory, whose application recorder is the billing store."""

    process_recorder_class = PostgresBillingRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        try:
            refuse_opaque_state(self.env)
        except OSError:
            self.datastore.close()
            raise
        if self.datastore.enable_db_functions:
            self.datastore.close()
            raise OSError(
                f"{self.POSTGRES_ENABLE_DB_FUNCTIONS} is set: with it the library inserts events "
                "through a database function and skips the tracking, meter and contract writes "
                f"of the same transaction; unset {self.POSTGRES_ENABLE_DB_FUNCTIONS}"
            )

    def application_recorder(self) -> PostgresBillingRecorder:
        # Same table names as the library's process_recorder() and tracking_recorder(), so
        # tracking written with events is what tracking_recorder().max_tracking_id() reads.
        name = self.env.name.lower()
        recorder = PostgresBillingRecorder(
            datastore=self.datastore,
            events_table_name=(name or "stored") + "_events",
            tracking_table_name=(name or "notification") + "_tracking",
        )
        if must_exist(self.env):
            self._require_store(recorder)
        if self.env_create_table():
            self._create_tables(recorder)
        try:
            recorder.keep_store_format()
        except OSError:
            self.datastore.close()
            raise
        return recorder

    def _require_store(self, recorder: PostgresBillingRecorder) -> None:
        """NoStore unless the database holds billcycle's events table."""
        schema = self.datastore.schema
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s"
                         " AND tablename = %s", (schema, recorder.events_table_name))
            found = curs.fetchone()
        if found is None:
            self.datastore.close()
            raise NoStore("no billcycle tables" + ("" if schema == "public"
                                                   else f" in schema {schema}"))

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """The library's (the snapshot store's), its table created as the application's is."""
        recorder = PostgresAggregateRecorder(
            datastore=self.datastore,
            events_table_name=(self.env.name.lower() or "stored") + "_" + purpose,
        )
        if self.env_create_table():
            self._create_tables(recorder)
        return recorder

    def _create_tables(self, recorder: PostgresAggregateRecorder) -> None:
        with self.datastore.get_connection() as conn:
            # Processes starting together would race in CREATE ... IF NOT EXISTS (the server
            # reports "tuple concurrently updated", or a duplicate pg_type row of the new
            # table): one creates, the others wait.
            conn.execute("SELECT pg_advisory_lock(%s)", (CREATE_TABLES_LOCK,))
            try:
                recorder.create_table()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_TABLES_LOCK,))
