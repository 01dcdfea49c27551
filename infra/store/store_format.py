"""The store's format: so that a billcycle never opens a store a later one has changed.

A version that writes what an earlier one would misread (events of new types, view columns,
meter rows kept another way) raises STORE_FORMAT; every open records the format it writes in
the store (`billcycle_store_format`) and refuses a store holding a later one, with one line
saying what to do. Versions before this check know nothing of it: README, "Upgrading".
What an earlier version need not know of, such as an index (of domain.ports.INDEXED_TOPICS),
leaves the format as it is: the stores' schema setup makes it at every open (IF NOT EXISTS),
so at the first open of a store made before it.

Format 1 (from a store with none): the values unique_count does not count, kept as marks
since format 1 (domain.usage.uncounted_mark), are marked for the usage stored before it too,
so that runs and `batch verify` name all of a period's uncounted events alike.

Format 2: a boolean value unique_count counts is kept as JSON's text, `true` and `false`
(domain.usage.value_text), so that `true` and `"true"` are one value as `7` and `"7"` are.
Earlier versions kept Python's `True` and `False`; their rows are respelled in place
(RESPELL_BOOLEANS). Those versions kept a string "True" the same way, as the boolean's one value,
and it stays so for the usage stored before the upgrade.

Format 3: a watermark source can be retired (`billcycle watermarks retire`): the watermarks'
events of the new types (Retired, Reactivated) would stop an earlier version's ingest and runs,
and its snapshots would have it ignore a retirement. Nothing is rewritten.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

STORE_FORMAT = 3  # raised only when an earlier version could not safely open the store

# Said before the upgrade to format 1 reads a store's usage: on a large store it takes long.
UPGRADING = (
    "billcycle: this store predates store format 1: reading all its stored usage once, now, to "
    "mark the values unique_count does not count (the billcycle that stored it kept no marks), "
    "so that runs and `batch verify` name all of a period's uncounted events alike; a large "
    "store takes a while, and later opens skip this")

CREATE_TABLE = ("CREATE TABLE IF NOT EXISTS {prefix}billcycle_store_format"
                " (version integer NOT NULL)")
READ = "SELECT max(version) FROM {prefix}billcycle_store_format"
WRITE = "INSERT INTO {prefix}billcycle_store_format (version) VALUES ({value})"

_USAGE_UNIQUE_KEY = "customer_id, metric, contract_tag, property, {value}, bucket_start"
RESPELL_BOOLEANS = (
    f"INSERT INTO {{prefix}}usage_unique ({_USAGE_UNIQUE_KEY.format(value='value')})"
    f" SELECT {_USAGE_UNIQUE_KEY.format(value='lower(value)')} FROM {{prefix}}usage_unique"
    " WHERE value IN ('True', 'False') ON CONFLICT DO NOTHING",
    "DELETE FROM {prefix}usage_unique WHERE value IN ('True', 'False')",
)


class LaterStoreFormat(OSError):
    """The store was written by a later billcycle: this one must not open it."""


def keep_store_format(execute: Callable[[str], Sequence[Any] | None], prefix: str = "",
                      mark_uncounted: Callable[[], None] = lambda: None) -> None:
    """Refuse a store of a later format; record this version's where the store has an earlier
    one or none, after upgrading it (in the same transaction: a store whose upgrade failed is
    upgraded at its next open): `mark_uncounted` for format 1, RESPELL_BOOLEANS for format 2.
    `execute` runs one statement and returns the first row of its result (None when it has
    none); `prefix` qualifies the tables (a PostgreSQL schema and a dot)."""
    row = execute(READ.format(prefix=prefix))
    found = row[0] if row else None
    if found is not None and found > STORE_FORMAT:
        raise LaterStoreFormat(
            f"this store was written by a later billcycle (store format {found}; this version "
            f"reads format {STORE_FORMAT} and earlier): opened with this one, it could be "
            "billed from data this version does not know; use that later version, or restore "
            "the backup taken before the upgrade")
    if found is None:
        mark_uncounted()
    if found is None or found < 2:
        for statement in RESPELL_BOOLEANS:
            execute(statement.format(prefix=prefix))
    if found is None or found < STORE_FORMAT:
        execute(WRITE.format(prefix=prefix, value=STORE_FORMAT))


def upgrading(stored: Iterable[T]) -> Iterator[T]:
    """The stored usage an upgrade reads, UPGRADING said on stderr before the first of it (a
    store without any is upgraded in no time, silently)."""
    rows = iter(stored)
    for first in rows:
        print(UPGRADING, file=sys.stderr, flush=True)
        yield first
        yield from rows
