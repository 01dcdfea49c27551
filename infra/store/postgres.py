"""PostgreSQL store: the library's process recorder plus meters and the contract index.

Selected with PERSISTENCE_MODULE=infra.store.postgres (see infra/store/url.py). Meters are
combined in SQL on `numeric` columns, so sums stay exact however many saves add to a bucket.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, cast
from uuid import UUID

# The module, not the class: PERSISTENCE_MODULE=infra.store.postgres must find exactly one
# factory class here.
import eventsourcing.postgres as library
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.utils import Environment, EnvType, retry
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from domain.ports import BillingStore
from domain.usage import MeterReading, MeterRequest
from infra.store.batch import BATCH_KWARG, StoreBatch, require_aware, take_batch

P = ParamSpec("P")
R = TypeVar("R")


def _retry(method: Callable[P, R]) -> Callable[P, R]:
    """Retry on a dropped connection, as the library's own reads do (keeps the signature)."""
    decorate = retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    return cast(Callable[P, R], decorate(method))


# latest_event_id and contract_id compare byte-wise ("C"), as Python compares str, whatever
# the database's default collation: the SQL combine must pick the same latest event as
# MeterBucket.merge, and contract paging must not depend on the server's locale.
_CREATE_TABLES = (
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
    "CREATE TABLE IF NOT EXISTS {schema}.contract_index ("
    ' contract_id text COLLATE "C" PRIMARY KEY, customer_id text NOT NULL)',
    "CREATE INDEX IF NOT EXISTS contract_index_customer_idx"
    " ON {schema}.contract_index (customer_id, contract_id)",
)

_LATER = "(EXCLUDED.latest_at, EXCLUDED.latest_event_id) > (b.latest_at, b.latest_event_id)"

# The stored events as four plain arrays, which psycopg sends in binary from C; the library's
# array of composites is built and escaped in Python. RETURNING keeps the rows' order, as the
# library's own unnest does.
_INSERT_EVENTS = (
    "INSERT INTO {schema}.{events} (originator_id, originator_version, topic, state)"
    " SELECT * FROM unnest(%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[])"
    " RETURNING notification_id"
)

# One statement per table for the whole batch, each column one typed array (see _PgBatch):
# decimals travel as numeric, exact.
_UPSERT_BUCKETS = (
    "INSERT INTO {schema}.usage_buckets AS b (customer_id, metric, contract_tag, bucket_start,"
    " quantity_sum, event_count, quantity_max, latest_at, latest_event_id, latest_quantity,"
    " revision)"
    " SELECT r.*, (SELECT max(notification_id) FROM {schema}.{events})"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::numeric[],"
    " %s::bigint[], %s::numeric[], %s::timestamptz[], %s::text[], %s::numeric[]) AS r"
    " ON CONFLICT (customer_id, metric, contract_tag, bucket_start) DO UPDATE SET"
    " quantity_sum = b.quantity_sum + EXCLUDED.quantity_sum,"
    " event_count = b.event_count + EXCLUDED.event_count,"
    " quantity_max = GREATEST(b.quantity_max, EXCLUDED.quantity_max),"
    f" latest_at = CASE WHEN {_LATER} THEN EXCLUDED.latest_at ELSE b.latest_at END,"
    f" latest_event_id = CASE WHEN {_LATER} THEN EXCLUDED.latest_event_id"
    " ELSE b.latest_event_id END,"
    f" latest_quantity = CASE WHEN {_LATER} THEN EXCLUDED.latest_quantity"
    " ELSE b.latest_quantity END,"
    " revision = EXCLUDED.revision"
)

_INSERT_UNIQUES = (
    "INSERT INTO {schema}.usage_unique"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::timestamptz[])"
    " ON CONFLICT DO NOTHING"
)

_INSERT_CONTRACTS = (
    "INSERT INTO {schema}.contract_index"
    " SELECT * FROM unnest(%s::text[], %s::text[])"
    " ON CONFLICT DO NOTHING"
)

# No ON CONFLICT: an id another writer committed meanwhile must fail the transaction.
_INSERT_MESSAGES = (
    "INSERT INTO {schema}.received_messages SELECT * FROM unnest(%s::text[], %s::text[])"
)

_RECEIVED_MESSAGES = (
    "SELECT message_id, fingerprint FROM {schema}.received_messages"
    " WHERE message_id = ANY(%s::text[])"
)

_BUCKETS_WHERE = (
    " WHERE customer_id = %(customer_id)s AND metric = %(metric)s"
    " AND contract_tag = ANY(%(tags)s::text[])"
    " AND bucket_start >= %(start)s AND bucket_start < %(end)s"
)

# One statement, so the buckets and the unique values are read from one snapshot.
_READ_METER = (
    "SELECT coalesce(sum(quantity_sum), 0) AS quantity_sum,"
    " coalesce(sum(event_count), 0) AS event_count,"
    " coalesce(max(quantity_max), 0) AS quantity_max,"
    " coalesce((array_agg(latest_quantity ORDER BY latest_at DESC, latest_event_id DESC))[1], 0)"
    " AS latest_quantity,"
    " coalesce(max(revision), 0) AS revision,"
    " (SELECT count(DISTINCT value) FROM {schema}.usage_unique"
    + _BUCKETS_WHERE
    + " AND property = %(property)s) AS unique_count"
    " FROM {schema}.usage_buckets" + _BUCKETS_WHERE
)

# Many reads in one round trip: each request row is joined to its own aggregate.
_READ_METERS = (
    "SELECT r.i, m.*,"
    " (SELECT count(DISTINCT u.value) FROM {schema}.usage_unique u"
    "  WHERE u.customer_id = r.customer_id AND u.metric = r.metric"
    "  AND u.contract_tag = ANY(r.tags) AND u.bucket_start >= r.start"
    "  AND u.bucket_start < r.stop AND u.property = r.property) AS unique_count"
    " FROM json_to_recordset(%s::json) AS r(i int, customer_id text, metric text, tags text[],"
    "  start timestamptz, stop timestamptz, property text)"
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

_FIRST_VERSIONS = (
    "SELECT originator_id, originator_version, topic, state FROM {schema}.{events}"
    " WHERE originator_version = 1 AND originator_id = ANY(%s)"
)

_EVENTS_OF = (
    "SELECT originator_id, originator_version, topic, state FROM {schema}.{events}"
    " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
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
        self._insert_events_arrays = self._sql(_INSERT_EVENTS)
        self._upsert_buckets = self._sql(_UPSERT_BUCKETS)
        self._insert_uniques = self._sql(_INSERT_UNIQUES)
        self._insert_contracts = self._sql(_INSERT_CONTRACTS)
        self._insert_messages = self._sql(_INSERT_MESSAGES)
        self._received_messages = self._sql(_RECEIVED_MESSAGES)
        self._read_meter = self._sql(_READ_METER)
        self._changed_buckets = self._sql(_CHANGED_BUCKETS)
        self._read_meters = self._sql(_READ_METERS)
        self._customer_contracts = self._sql(_CUSTOMER_CONTRACTS)
        self._first_versions = self._sql(_FIRST_VERSIONS)
        self._events_of = self._sql(_EVENTS_OF)

    def _sql(self, template: str) -> Composed:
        return SQL(template).format(
            schema=Identifier(self.datastore.schema),
            events=Identifier(self.events_table_name),
            id_type=Identifier(self.datastore.originator_id_type),
        )

    # --- writing ----------------------------------------------------------------------------

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        batch, rest = take_batch(len(stored_events), kwargs)
        if batch is not None:
            rest[BATCH_KWARG] = _PgBatch.of(batch)
        if stored_events:
            rest[_EVENTS_KWARG] = _event_columns(stored_events)
        ids = super().insert_events(stored_events, **rest)
        return cast("Sequence[int] | None", ids)  # the library's retry decorator erases it

    def _insert_stored_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        # As the library's PostgresApplicationRecorder does: lock the events table (EXCLUSIVE,
        # held until commit) so that notification ids follow commit order, notify listeners,
        # then insert; a version taken already fails on the primary key (IntegrityError at
        # the library's pipeline sync). Only the insert's parameters differ.
        columns = kwargs.get(_EVENTS_KWARG)
        if columns is None:  # not through insert_events: the library's own way
            super()._insert_stored_events(curs, stored_events, **kwargs)
        else:
            self._lock_table(curs)
            self._notify_channel(curs)
            curs.execute(self._insert_events_arrays, columns, binary=True)
        batch = kwargs.get(BATCH_KWARG)
        if not isinstance(batch, _PgBatch):
            return
        # Another cursor: the library reads the new notification ids from `curs` after its
        # pipeline sync, so `curs` must keep the INSERT's result.
        with curs.connection.cursor() as side:
            self._write_batch(side, batch)

    def _write_batch(self, curs: Cursor[DictRow], batch: _PgBatch) -> None:
        # Beware: the library's insert_events catches any exception raised here and still
        # COMMITS before re-raising it. A failure on the server aborts the transaction, so
        # that COMMIT rolls back; a failure in Python would commit the events without the
        # batch. Hence only columns checked before the transaction are sent (see _PgBatch).
        #
        # Each bucket's revision is max(notification_id) of the events table as this same
        # transaction sees it after its own insert. Because the table lock serialises writers
        # until commit, every transaction that committed earlier has lower ids and every one
        # that commits later has higher ids: revisions follow commit order exactly. A reader
        # that has seen revision R and asks for buckets with revision > R can never miss a
        # change that commits later with a lower number; that makes late usage exact.
        for statement, rows in (
            (self._upsert_buckets, batch.buckets),
            (self._insert_uniques, batch.uniques),
            (self._insert_contracts, batch.contracts),
            (self._insert_messages, batch.messages),
        ):
            if rows is not None:
                curs.execute(statement, rows, binary=True)

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
    ) -> MeterReading:
        params = {
            "customer_id": customer_id,
            "metric": metric,
            "tags": list(contract_tags),
            "start": require_aware(start, "meter start"),
            "end": require_aware(end, "meter end"),
            "property": unique_property,
        }
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._read_meter, params)
            row = curs.fetchone()
        assert row is not None  # an aggregate without GROUP BY always returns a row
        return _reading(row)

    @_retry
    def read_meters(self, requests: Sequence[MeterRequest]) -> list[MeterReading]:
        if not requests:
            return []
        rows = json.dumps([
            {
                "i": i,
                "customer_id": r.customer_id,
                "metric": r.metric,
                "tags": list(r.contract_tags),
                "start": require_aware(r.start, "meter start").isoformat(),
                "stop": require_aware(r.end, "meter end").isoformat(),
                "property": r.unique_property,
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
    def events_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        found: dict[UUID, list[StoredEvent]] = {}
        if not originator_ids:
            return found
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._events_of, (list(originator_ids),))
            for row in curs.fetchall():
                found.setdefault(row["originator_id"], []).append(StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                ))
        return found

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
            curs.execute(self._first_versions, (list(originator_ids),))
            return {
                row["originator_id"]: StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            }


def _reading(row: Any) -> MeterReading:
    return MeterReading(
        quantity_sum=row["quantity_sum"],
        event_count=int(row["event_count"]),
        quantity_max=row["quantity_max"],
        latest_quantity=row["latest_quantity"],
        unique_count=row["unique_count"],
        revision=row["revision"],
    )


Columns = tuple[list[Any], ...]

_EVENTS_KWARG = "billcycle_event_columns"


def _event_columns(stored_events: Sequence[StoredEvent]) -> Columns:
    """The stored events as the four arrays of _INSERT_EVENTS, checked before the transaction."""
    topics = [e.topic for e in stored_events]
    _check_text(topics)
    return (
        [e.originator_id for e in stored_events],
        [e.originator_version for e in stored_events],
        topics,
        [e.state for e in stored_events],
    )


@dataclass(frozen=True)
class _PgBatch:
    """A batch as one list per column and table (None for a table without rows).

    Built and checked before the transaction, so that nothing is left that can fail in Python
    while the library's transaction is open (see PostgresBillingRecorder._write_batch):
    psycopg then only dumps strings, aware datetimes, finite decimals and ints.
    """

    buckets: Columns | None
    uniques: Columns | None
    contracts: Columns | None
    messages: Columns | None

    @classmethod
    def of(cls, batch: StoreBatch) -> _PgBatch:
        buckets = [
            (
                key.customer_id,
                key.metric,
                key.contract_tag,
                require_aware(key.bucket_start, "bucket_start"),
                b.quantity_sum,
                b.event_count,
                b.quantity_max,
                require_aware(b.latest_at, "latest_at"),
                b.latest_event_id,
                b.latest_quantity,
            )
            for key, b in batch.buckets.items()
        ]
        uniques = [
            (*row[:5], require_aware(row[5], "bucket_start")) for row in batch.uniques
        ]
        return cls(
            _columns(buckets, text=(0, 1, 2, 8)),
            _columns(uniques, text=(0, 1, 2, 3, 4)),
            _columns(batch.contracts, text=(0, 1)),
            _columns(batch.messages, text=(0, 1)),
        )


def _columns(rows: Sequence[Sequence[Any]], text: Sequence[int]) -> Columns | None:
    if not rows:
        return None
    columns = tuple(list(column) for column in zip(*rows, strict=True))
    for i in text:
        _check_text(columns[i])
    return columns


def _check_text(values: list[Any]) -> None:
    """Every value a str that UTF-8 can encode (a lone surrogate cannot be), or ValueError."""
    joined = "".join(values)  # TypeError for a non-str
    try:
        joined.encode()
    except UnicodeEncodeError as error:
        raise ValueError(f"text that UTF-8 cannot encode: {error}") from None
    if "\x00" in joined:
        raise ValueError("text with a NUL character, which PostgreSQL text cannot hold")


CREATE_TABLES_LOCK = 0x6269_6C6C_6379  # "billcy": the advisory lock key of table creation


class PostgresBillingFactory(library.PostgresFactory):
    """The library's PostgreSQL factory, whose application recorder is the billing store."""

    process_recorder_class = PostgresBillingRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
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
        if self.env_create_table():
            with self.datastore.get_connection() as conn:
                # Processes starting together would race in CREATE ... IF NOT EXISTS (the
                # server reports "tuple concurrently updated"): one creates, the others wait.
                conn.execute("SELECT pg_advisory_lock(%s)", (CREATE_TABLES_LOCK,))
                try:
                    recorder.create_table()
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_TABLES_LOCK,))
        return recorder
