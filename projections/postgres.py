"""Views on PostgreSQL: the library's PostgreSQL tracking recorder, with the view's own tables.

New rows go in with COPY, replaced rows with one pipelined upsert per row; the read side uses
REPEATABLE READ so that a report's queries all see one state of the view.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal

from infra.store.postgres import copy_rows
from projections.persistence import Changes, Row, Select, Table, View, ViewConflict


def _pg(statement: str) -> str:
    """Portable SQL with `?` placeholders in psycopg's `%s` style."""
    return statement.replace("%", "%%").replace("?", "%s")


class PostgresView(PostgresTrackingRecorder, View):
    """A view in the PostgreSQL database of the event store; tracking in `<name>_tracking`."""

    background_writes = True
    catalog = (
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        " UNION SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    )
    columns_catalog = (
        "SELECT c.relname, a.attname FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
        " AND a.attnum > 0 AND NOT a.attisdropped"
    )

    def __init__(
        self, datastore: PostgresDatastore, name: str, tables: tuple[Table, ...],
        application_name: str, rules: int, rebuilding: bool = False,
    ) -> None:
        """`rebuilding`: the view as drop() just left it, in another process of the same
        replay; not completed here (the replay does that at its end)."""
        self.name = name
        self.tables = tables
        self.rules = rules
        self.application_name = application_name
        super().__init__(datastore, tracking_table_name=self.tracking_table)
        schema, tracking = Identifier(datastore.schema), Identifier(self.tracking_table)
        # What a rebuild starts from (drop()): the tracking table and the view's tables with
        # the indexes read while building, append-only tables without their primary key;
        # those keys and the reports' indexes come after (finish_build()).
        tracking_statements = list(self.sql_create_statements)
        self._rebuild_statements: list[Composed] = [
            *tracking_statements,
            *(SQL(s).format() for table in tables
              for s in table.build_statements(keyed=not table.append_only)),
        ]
        self.sql_create_statements = [
            *tracking_statements,
            *(SQL(s).format() for table in tables for s in table.build_statements()),
            *(_add_key(table) for table in tables if table.append_only),
            *(SQL(s).format() for table in tables for s in table.report_index_statements()),
        ]
        self._insert_start: Composed = SQL(
            "INSERT INTO {0}.{1} VALUES (%s, 0) ON CONFLICT DO NOTHING"
        ).format(schema, tracking)
        self._lock_key = zlib.crc32(f"billcycle view {name}".encode())  # an advisory lock's
        self._lock_position: Composed = SQL(
            "SELECT notification_id FROM {0}.{1} WHERE application_name = %s FOR UPDATE"
        ).format(schema, tracking)
        if not rebuilding:
            self.create_tables()

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        super()._create_table(curs)
        # A row from the start, so every write can lock it (see write()).
        curs.execute(self._insert_start, (self.application_name,))
        for statement, params in self.rules_statements():
            curs.execute(_pg(statement), params)

    def key_index_names(self) -> list[str]:
        return [f"{table.name}_pkey" for table in self.tables if table.append_only]

    def write(self, changes: Changes, tracking: Tracking, after: int) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._lock_position, (self.application_name,))
            row = curs.fetchone()
            found = row["notification_id"] if row else 0
            if found != after:
                raise ViewConflict(f"view {self.name} is at {found}, not {after}")
            for table, rows in changes.rows_to_insert():
                _copy(curs, table, rows)
            for table, rows in changes.rows_to_upsert():
                curs.executemany(_pg(table.upsert_statement()), rows)
            self._insert_tracking(curs, tracking)

    @contextmanager
    def reading(self) -> Iterator[Select]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield _select(curs)

    def drop(self, unless_current: bool = False) -> bool:
        """Empty tables without the reports' indexes, and the append-only ones without their
        primary key: a replay fills them by COPY, page by page, and finish_build() then
        makes those indexes and keys once, which costs the server less than putting every
        row into them (a fifth of its CPU in a replay for the reports' indexes; the keys
        about as much again). Until then the reports' queries are slower, never wrong; and a
        replay killed before the end leaves them to the next opening of the view
        (create_tables() finds them missing), before anything else writes to it."""
        with self.datastore.transaction(commit=True) as curs:
            # One process at a time replaces a view: the look that follows sees what another
            # that got there first committed.
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            if unless_current and self.drift(_select(curs)) is None:
                return False
            self.forget_tracking_table()
            for table in self.tables:
                curs.execute(SQL("DROP TABLE IF EXISTS {0}").format(Identifier(table.name)))
            curs.execute(SQL("DROP TABLE {0}.{1}").format(
                Identifier(self.datastore.schema), Identifier(self.tracking_table)))
            # The library's creation (it also marks the tracking table's version), of the
            # rebuild's statements only.
            every = self.sql_create_statements
            self.sql_create_statements = self._rebuild_statements
            try:
                self._create_table(curs)
            finally:
                self.sql_create_statements = every
        return True


def _add_key(table: Table) -> Composed:
    """The table's primary key where it has none (a rebuild left it for its end); the index
    gets PostgreSQL's usual name, `<table>_pkey`, as when the table is created with it."""
    name = Identifier(table.name)
    return SQL(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_index WHERE indrelid = {0}::regclass"
        " AND indisprimary) THEN ALTER TABLE {1} ADD PRIMARY KEY ({2}); END IF; END $$"
    ).format(Literal(table.name), name, SQL(", ").join(Identifier(k) for k in table.key))


# The view tables' column types as PostgreSQL names them, for binary COPY.
_PG_TYPES = {"TEXT": "text", "BIGINT": "int8", "INTEGER": "int4"}


def _copy(curs: Cursor[DictRow], table: Table, rows: list[Row]) -> None:
    """New rows by binary COPY, typed by the table's columns."""
    columns = SQL(", ").join(Identifier(c) for c in table.column_names)
    statement = SQL("COPY {0} ({1}) FROM STDIN (FORMAT BINARY)").format(
        Identifier(table.name), columns)
    copy_rows(curs, statement, [_PG_TYPES[kind] for _, kind in table.columns], rows)


def _select(curs: Cursor[DictRow]) -> Select:
    def select(statement: str, params: Sequence[Any] = ()) -> list[Row]:
        curs.execute(_pg(statement), params)
        return [tuple(row.values()) for row in curs.fetchall()]

    return select
