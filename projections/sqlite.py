"""Views on SQLite: the library's SQLite tracking recorder, with the view's own tables."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteTrackingRecorder

from projections.persistence import Changes, Row, Select, Table, View, ViewConflict


class SQLiteView(SQLiteTrackingRecorder, View):
    """A view in the SQLite database of the event store; tracking in `<name>_tracking`."""

    catalog = "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')"
    columns_catalog = (
        "SELECT m.name, c.name FROM sqlite_master m, pragma_table_info(m.name) c"
        " WHERE m.type = 'table'"
    )

    def __init__(
        self, datastore: SQLiteDatastore, name: str, tables: tuple[Table, ...],
        application_name: str, rules: int,
    ) -> None:
        self.name = name
        self.tables = tables
        self.rules = rules
        self.application_name = application_name
        super().__init__(datastore)
        # The library's statements name the shared `tracking` table; this view has its own.
        t = self.tracking_table
        self.insert_tracking_statement = (
            f"INSERT INTO {t} VALUES (:application_name, :notification_id) "
            "ON CONFLICT (application_name) DO UPDATE SET notification_id = :notification_id "
            f"WHERE {t}.notification_id < :notification_id RETURNING notification_id"
        )
        self.select_max_tracking_id_statement = (
            f"SELECT MAX(notification_id) FROM {t} WHERE application_name=?"
        )
        self.create_tables()

    def construct_create_table_statements(self) -> list[str]:
        t = self.tracking_table
        return [
            f"CREATE TABLE IF NOT EXISTS {t} (application_name TEXT, notification_id INTEGER, "
            "PRIMARY KEY (application_name)) WITHOUT ROWID",
            *(s for table in self.tables for s in table.create_statements()),
        ]

    def _create_table(self, c: SQLiteCursor) -> None:
        super()._create_table(c)
        # A row from the start, so every write can check and lock it (see write()).
        c.execute(f"INSERT OR IGNORE INTO {self.tracking_table} VALUES (?, 0)",
                  (self.application_name,))
        for statement, params in self.rules_statements():
            c.execute(statement, params)

    def write(self, changes: Changes, tracking: Tracking, after: int) -> None:
        with self.datastore.transaction(commit=True) as c:
            # A write first: it takes the database's write lock (waiting for other writers)
            # before the position is read, so the position cannot move until commit.
            c.execute(
                f"UPDATE {self.tracking_table} SET notification_id = notification_id"
                " WHERE application_name = ?", (self.application_name,),
            )
            found = self._max_tracking_id(self.application_name, c) or 0
            if found != after:
                raise ViewConflict(f"view {self.name} is at {found}, not {after}")
            for table, rows in changes.rows_to_insert():
                c.executemany(table.insert_statement(), rows)
            for table, rows in changes.rows_to_upsert():
                c.executemany(table.upsert_statement(), rows)
            self._insert_tracking(c, tracking)

    @contextmanager
    def reading(self) -> Iterator[Select]:
        with self.datastore.transaction(commit=False) as c:
            yield _select(c)

    def drop(self, unless_current: bool = False) -> bool:
        with self.datastore.transaction(commit=True) as c:
            if unless_current:
                # A write first: it takes the database's write lock, so the look that follows
                # sees what another process that got there first committed.
                c.execute(f"UPDATE {self.tracking_table} SET notification_id = notification_id")
                if self.drift(_select(c)) is None:
                    return False
            self.forget_tracking_table()
            for table in (*(t.name for t in self.tables), self.tracking_table):
                c.execute(f"DROP TABLE IF EXISTS {table}")
            self._create_table(c)
        return True


def _select(c: SQLiteCursor) -> Select:
    def select(statement: str, params: Sequence[Any] = ()) -> list[Row]:
        c.execute(statement, params)
        return [tuple(row) for row in c.fetchall()]

    return select
