"""Materialised views: tables written together with the view's tracking, in one transaction.

A view is a library `TrackingRecorder` (as in the library's examples of projections into
materialised views) that also owns some tables. Its SQLite and PostgreSQL variants
(projections/sqlite.py, projections/postgres.py) differ only in how they talk to the
database; the tables, the rows and the queries are the projection's (portable SQL with `?`
placeholders, dates as ISO text, money as integer minor units).

Each view has a tracking table of its own, `<view>_tracking`, holding the position in the
billing application's log through which the tables are built. A write names the position
it starts from; if another writer moved the view on meanwhile, the write is refused
(`ViewConflict`) and nothing of it is kept.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from typing import Any, Protocol

from eventsourcing.persistence import (
    OperationalError,
    PersistenceError,
    ProgrammingError,
    Tracking,
    TrackingRecorder,
)

Row = tuple[Any, ...]
CREATE_ATTEMPTS = 5
# Which version of its projection's rules built each view (see View.drift); a view built
# before this table existed was built by version 1.
RULES_TABLE = "billcycle_view_rules"


class ForeignTable(ProgrammingError):
    """A table named as one of a view's that billcycle did not make: the view is not built
    (nor that table dropped) in that database."""
FIRST_RULES = 1


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per table
class Table:
    """A view table: columns (name, SQL type), primary key and secondary indexes.

    `indexes` are read while the view is built (a page looks up the rows it continues);
    `report_indexes` only by the reports, so a rebuild on PostgreSQL makes them after its
    bulk load, once, instead of inserting every row into them (see PostgresView.drop).

    `append_only`: rows only ever added by `Changes.insert` (each key born with its event,
    never upserted) and never read while the view is built, so a rebuild on PostgreSQL loads
    the table without its primary key and adds the key after the load, in one sorted build
    instead of a btree insert per row. A duplicate still cannot stay: adding the key fails
    on one, and every write after the rebuild has the key.
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    report_indexes: tuple[tuple[str, ...], ...] = ()
    append_only: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def index_names(self) -> list[str]:
        return [self._index_name(index) for index in (*self.indexes, *self.report_indexes)]

    def _index_name(self, index: tuple[str, ...]) -> str:
        return f"{self.name}_{'_'.join(index)}_idx"

    def _index_statement(self, index: tuple[str, ...]) -> str:
        return (f"CREATE INDEX IF NOT EXISTS {self._index_name(index)} ON {self.name} "
                f"({', '.join(index)})")

    def create_statements(self) -> list[str]:
        """The table and all its indexes."""
        return [*self.build_statements(), *self.report_index_statements()]

    def build_statements(self, keyed: bool = True) -> list[str]:
        """The table with what building it reads: `indexes`, and its primary key (unless
        not `keyed`: then the key is added after a bulk load)."""
        columns = ", ".join(f"{name} {kind}" for name, kind in self.columns)
        key = f", PRIMARY KEY ({', '.join(self.key)})" if keyed else ""
        statements = [f"CREATE TABLE IF NOT EXISTS {self.name} ({columns}{key})"]
        statements.extend(self._index_statement(index) for index in self.indexes)
        return statements

    def report_index_statements(self) -> list[str]:
        return [self._index_statement(index) for index in self.report_indexes]

    def insert_statement(self) -> str:
        marks = ", ".join("?" for _ in self.columns)
        return f"INSERT INTO {self.name} ({', '.join(self.column_names)}) VALUES ({marks})"

    def upsert_statement(self) -> str:
        rest = [c for c in self.column_names if c not in self.key]
        update = ", ".join(f"{c} = excluded.{c}" for c in rest)
        action = f"DO UPDATE SET {update}" if rest else "DO NOTHING"
        return f"{self.insert_statement()} ON CONFLICT ({', '.join(self.key)}) {action}"

    @cached_property
    def _key_indexes(self) -> tuple[int, ...]:
        return tuple(self.column_names.index(k) for k in self.key)

    @cached_property
    def _key_getter(self) -> Callable[[Row], Any]:
        # itemgetter of two or more indexes returns a tuple; of one, the bare value.
        getter = itemgetter(*self._key_indexes)
        return getter if len(self._key_indexes) > 1 else lambda row: (getter(row),)

    def key_of(self, row: Row) -> Row:
        key: Row = self._key_getter(row)
        return key


@dataclass
class Changes:
    """What one batch of events does to a view.

    Rows whose key is born in the batch (the event that creates it is in the batch) are new:
    they go in as plain inserts (COPY on PostgreSQL), the last state of each key only. Rows
    that may already be in the view are upserted.
    """

    inserts: dict[Table, list[Row]] = field(default_factory=dict)
    new: dict[Table, dict[Row, Row]] = field(default_factory=dict)
    upserts: dict[Table, dict[Row, Row]] = field(default_factory=dict)

    def insert(self, table: Table, row: Row) -> None:
        """A row of an append-only table: its key comes from an event never seen before."""
        self.inserts.setdefault(table, []).append(row)

    def inserted(self, table: Table) -> list[Row]:
        """The list insert() adds the table's rows to: appending to it is inserting (for
        loops of many rows, without a call per row)."""
        return self.inserts.setdefault(table, [])

    def put(self, table: Table, row: Row, new: bool) -> None:
        """A row's latest state; `new` when its key was born in this batch (and once new in a
        batch, a key stays new)."""
        if table.append_only:  # it may have no key to upsert by (see Table)
            raise TypeError(f"{table.name} is append-only: rows go in by insert()")
        key = table.key_of(row)
        fresh = self.new.setdefault(table, {})
        if new or key in fresh:
            fresh[key] = row
        else:
            self.upserts.setdefault(table, {})[key] = row

    def rows_to_insert(self) -> Iterator[tuple[Table, list[Row]]]:
        yield from ((table, rows) for table, rows in self.inserts.items() if rows)
        for table, keyed in self.new.items():
            yield table, list(keyed.values())

    def rows_to_upsert(self) -> Iterator[tuple[Table, list[Row]]]:
        for table, keyed in self.upserts.items():
            yield table, list(keyed.values())


class ViewConflict(Exception):
    """Another writer moved the view on since this batch was read: read again, retry."""


class Select(Protocol):
    def __call__(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of a query (portable SQL, `?` placeholders) as plain tuples."""


class View(TrackingRecorder, ABC):
    """A projection's tables and tracking, in the database of the event store."""

    name: str
    tables: tuple[Table, ...]
    rules: int  # the version of the projection's rules this billcycle builds the view by
    application_name: str  # the application whose log the view follows
    catalog: str  # a query of the names of the database's tables and indexes
    # Why the view was dropped when opened, to be built again (see `drift`); None: it was not.
    drifted: str | None = None
    columns_catalog: str  # a query of (table, column) of the database's tables
    # Whether write() may run in a thread of its own while the runner computes the next
    # view's rows (a server database with a connection pool; not SQLite's connections).
    background_writes: bool = False
    tracking_table_exists: bool  # the library's tracking recorders keep these two
    tracking_migration_previous: int | None

    @property
    def tracking_table(self) -> str:
        return f"{self.name}_tracking"

    @abstractmethod
    def create_table(self) -> None:
        """The library's: create the tracking table (and with it the view's tables)."""

    @abstractmethod
    def write(self, changes: Changes, tracking: Tracking, after: int) -> None:
        """Apply the changes and move tracking from `after` to `tracking`, all or nothing."""

    @abstractmethod
    def reading(self) -> AbstractContextManager[Select]:
        """A read transaction: every query in it sees the same state of the view."""

    @abstractmethod
    def drop(self, unless_current: bool = False) -> bool:
        """Replace the view's tables and tracking with empty ones, in one transaction; whether
        it did. With `unless_current`, only if the view still drifts once this process holds
        it: another process that opened the drifted view at the same moment may have dropped
        it first (its build is not thrown away again)."""

    def finish_build(self) -> None:
        """After a rebuild from empty tables: whatever drop() left for later (on PostgreSQL
        the reports' indexes and the append-only tables' primary keys)."""
        self.create_tables()

    def create_tables(self) -> None:
        """Create the tables and tracking table where missing.

        Another process may be creating them at the same moment (a report and `billcycle
        project` starting together): then the creation collides with the other's (a duplicate
        tracking row or table type, or on SQLite a database changed since the transaction
        began), and another look finds everything in place.
        """
        self.drifted = self.drift()
        # Made by another version: built again from the log, from empty.
        if self.drifted and not self.drop(unless_current=True):
            self.drifted = None  # another process dropped it first
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            if self._complete():
                return  # the usual case, and no write: nothing to collide with
            try:
                self.create_table()
                return
            except PersistenceError:
                if attempt == CREATE_ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)

    def drift(self, select: Select | None = None) -> str | None:
        """How the view in the database differs from the one this version of billcycle
        builds, or None: columns added or removed since its tables were made, or rows
        written by another version of the projection's rules (`rules`: raised by a release
        that changes what a projection writes for the same events, its columns unchanged).

        A view is a projection of the log, so a view made by another version is not
        migrated: `create_tables()` drops it, and the next catch-up builds it again from the
        first event (saying so: `drifted`). `select`: in a transaction of the caller's.
        """
        select = select or self.select
        found: dict[str, set[str]] = {}
        try:
            for table, column in select(self.columns_catalog):
                found.setdefault(table, set()).add(column)
        except (OperationalError, ProgrammingError):
            return None  # nothing to compare yet
        for table in self.tables:
            have, want = found.get(table.name), set(table.column_names)
            if have is None or have == want:
                continue
            if len(have & want) * 2 < len(want):
                # Not this view made by another version (that differs by a column or two) but
                # another application's table of the same name: never dropped.
                raise ForeignTable(
                    f"the table {table.name} was not made by billcycle (its columns: "
                    f"{', '.join(sorted(have))})")
            parts = []
            if want - have:
                parts.append(f"without {', '.join(sorted(want - have))}")
            if have - want:
                parts.append(f"with {', '.join(sorted(have - want))} no longer written")
            return f"its table {table.name} was made {' and '.join(parts)}"
        if self.tracking_table not in found:
            return None  # not built yet
        # Asked only where the table is: a failed query would end a PostgreSQL transaction.
        built_by = (self.built_by(select) if RULES_TABLE in found else None) or FIRST_RULES
        if built_by != self.rules:
            return (f"it was built by version {built_by} of the {self.name} rules; this "
                    f"billcycle builds version {self.rules}")
        return None

    def built_by(self, select: Select | None = None) -> int | None:
        """The version of the rules that built the view, as recorded (None: not recorded)."""
        try:
            rows = (select or self.select)(
                f"SELECT rules FROM {RULES_TABLE} WHERE name = ?", (self.name,))
        except (OperationalError, ProgrammingError):
            return None
        return int(rows[0][0]) if rows else None

    def rules_statements(self) -> list[tuple[str, tuple[Any, ...]]]:
        """(portable SQL, parameters) recording that this version's rules build the view: run
        in the transaction that creates the view's tables or replaces them with empty ones."""
        return [
            (f"CREATE TABLE IF NOT EXISTS {RULES_TABLE} (name TEXT PRIMARY KEY, "
             "rules INTEGER NOT NULL)", ()),
            (f"INSERT INTO {RULES_TABLE} (name, rules) VALUES (?, ?) ON CONFLICT (name) "
             "DO UPDATE SET rules = excluded.rules", (self.name, self.rules)),
        ]

    def _complete(self) -> bool:
        """Whether every table, index and the tracking row are there already."""
        wanted = {self.tracking_table, *self.key_index_names()}
        for table in self.tables:
            wanted.update([table.name, *table.index_names])
        try:
            found = {name for (name,) in self.select(self.catalog)}
            return (wanted <= found and self.max_tracking_id(self.application_name) is not None
                    and self.built_by() == self.rules)
        except (OperationalError, ProgrammingError):
            return False

    def key_index_names(self) -> list[str]:
        """The catalog's names of primary keys that a rebuild adds after its load."""
        return []

    def forget_tracking_table(self) -> None:
        """Before the tracking table is dropped and made again: otherwise the library would
        take the new one for a legacy table to migrate (and rename it away)."""
        self.tracking_table_exists = False
        self.tracking_migration_previous = None

    def position(self) -> int:
        """The log position through which the view is built (0: nothing yet)."""
        return self.max_tracking_id(self.application_name) or 0

    def select(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.reading() as select:
            return select(statement, params)

    def dump(self) -> Iterator[tuple[str, list[Row]]]:
        """Every table's rows in key order: for comparing two builds of a view."""
        with self.reading() as select:
            for table in self.tables:
                order = ", ".join(table.key)
                yield table.name, select(f"SELECT * FROM {table.name} ORDER BY {order}")
