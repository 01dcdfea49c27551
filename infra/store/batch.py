"""What one save writes beside its events: folded meter buckets, unique values, contract links
and the received message ids. Usage batches among the events are folded too where the store
folds in the saving transaction (`take_batch(..., fold_usage=True)`: SQLite).

`app.save(*aggregates, meter_increments=[...], contracts=[...], messages=[...])` hands these
kwargs through
`EventStore.put` to the recorder's `insert_events`. The recorders turn them into a `StoreBatch`
before they open a transaction, so the folding (Python work proportional to the batch) never
runs while the events table is locked against every other writer.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import MAX_PREC, localcontext
from typing import Any, TypeVar

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from domain.inbox import MessageReceipt
from domain.usage import (
    COUNTED_PROPERTIES,
    LEGACY_USAGE_EVENT_TOPIC,
    UNCOUNTED_MARK,
    USAGE_BATCH_RECORDED_TOPIC,
    MeterBucket,
    MeterIncrement,
    MeterKey,
    UsageBatch,
    bucket_start,
    fold_increments,
    property_values,
    unique_row_property,
)

# The kwarg under which a recorder's prepared batch travels from its insert_events to its
# insert hooks inside the transaction.
BATCH_KWARG = "billcycle_store_batch"

# (customer_id, metric, contract_tag, property, value, bucket_start): one usage_unique row.
UniqueRow = tuple[str, str, str, str, str, datetime]


@contextmanager
def exact_decimals() -> Iterator[None]:
    """Decimal arithmetic that never rounds, as PostgreSQL's numeric does.

    The default context keeps 28 significant digits, so a long sum could silently round.
    """
    with localcontext(prec=MAX_PREC):
        yield


def require_aware(instant: datetime, what: str) -> datetime:
    """`instant` itself; a naive datetime would be read in whatever zone the database assumes."""
    if instant.utcoffset() is None:
        raise ValueError(f"{what} {instant.isoformat()} has no timezone; pass an aware UTC time")
    return instant


def utc_text(instant: datetime, what: str) -> str:
    """Fixed-width ISO-8601 in UTC with microseconds: equal width makes text order time order."""
    return require_aware(instant, what).astimezone(UTC).isoformat(timespec="microseconds")


# The events that held every received message id (with its fingerprint) before the
# received_messages table existed: each usage message's UsageEvent and every other message's
# receipt. The stores copy them into the table once.
LEGACY_RECEIPT_TOPICS_SQL = ", ".join(
    f"'{topic}'" for topic in (LEGACY_USAGE_EVENT_TOPIC, f"{get_topic(MessageReceipt)}.Received")
)


def topic_is(topic: str) -> str:
    """The condition of an indexed topic's partial index (domain.ports.INDEXED_TOPICS), and of
    the query reading it (BillingStore.indexed_events). A literal, not a parameter, in both:
    PostgreSQL uses a partial index only for a query whose condition implies the index's,
    which a parameter (a prepared statement's generic plan) does not."""
    if "'" in topic:
        raise ValueError(f"topic {topic!r} holds a quote; an indexed topic is a class's path")
    return f"topic = '{topic}'"

S = TypeVar("S")


def indexed_statement(statements: Mapping[str, S], topic: str) -> S:
    """A store's statement reading an indexed topic's events, by topic: any other topic is
    refused, not read by a scan of the log."""
    found = statements.get(topic)
    if found is None:
        raise ValueError(f"topic {topic} has no index of its own in the store; read it from "
                         "the log, or add it to domain.ports.INDEXED_TOPICS")
    return found


@dataclass(frozen=True)
class StoreBatch:
    """One save's meter deltas (one per key), its increments (for their unique values),
    contract links, received messages (message id, fingerprint), and the properties its
    contract events count."""

    buckets: dict[MeterKey, MeterBucket]
    increments: list[MeterIncrement]
    contracts: list[tuple[str, str]]
    messages: list[tuple[str, str]]
    counted: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        meter_increments: Sequence[MeterIncrement],
        contracts: Sequence[tuple[str, str]],
        messages: Sequence[tuple[str, str]] = (),
        counted: Iterable[str] = (),
    ) -> StoreBatch:
        increments = list(meter_increments)
        for inc in increments:
            if not inc.quantity.is_finite():
                raise ValueError(
                    f"usage {inc.event_id}: quantity {inc.quantity} is not a finite number"
                )
        with exact_decimals():
            buckets = fold_increments(increments)
        return cls(buckets, increments, list(contracts), list(messages), frozenset(counted))

    def uniques(self, names: Collection[str] | None = None) -> list[UniqueRow]:
        """The distinct usage_unique rows of the increments: of every property, or of `names`
        (PostgreSQL knows which only inside its transaction)."""
        return unique_rows(self.increments, names)


def unique_aggregates(value: str, char: str) -> str:
    """The aggregates of a meter read's usage_unique rows (those of the property and of its
    `uncounted_property`), in SQL: `unique_count`, the distinct
    values counted; `uncounted`, the rows marking an event whose value is not counted (one
    per event: domain.usage.UNCOUNTED_MARK); `uncounted_first`, the least of those marks.
    `value`: the column, in code point order; `char`: the function making a character of a
    code point (chr on PostgreSQL, char on SQLite)."""
    marked = (f"substr({value}, 1, {len(UNCOUNTED_MARK)})"
              f" = {char}({ord(UNCOUNTED_MARK[0])}) || '{UNCOUNTED_MARK[1:]}'")
    return (f"count(DISTINCT CASE WHEN NOT {marked} THEN {value} END) AS unique_count,"
            f" count(CASE WHEN {marked} THEN 1 END) AS uncounted,"
            f" min(CASE WHEN {marked} THEN {value} END) AS uncounted_first")


def unique_rows(
    increments: Iterable[MeterIncrement], names: Collection[str] | None = None
) -> list[UniqueRow]:
    """The distinct usage_unique rows of `increments`: of every property, or of `names`."""
    uniques: set[UniqueRow] = set()
    for inc in increments:
        if inc.properties:
            k = inc.key
            for name, value in inc.properties:
                if names is None or name in names:
                    uniques.add((k.customer_id, k.metric, k.contract_tag,
                                 unique_row_property(name, value), value, k.bucket_start))
    return list(uniques)


# The library's settings that make stored event state compressed or enciphered bytes.
OPAQUE_STATE_SETTINGS = ("COMPRESSOR_TOPIC", "CIPHER_TOPIC")


def refuse_opaque_state(env: Mapping[str, Any]) -> None:
    """OSError if the events would be stored compressed or enciphered: both stores read usage
    records (and legacy message ids) from the stored events' JSON, PostgreSQL on the server."""
    for name in OPAQUE_STATE_SETTINGS:
        if env.get(name):
            raise OSError(
                f"{name} is set: billcycle's stores read the usage records of stored events "
                "as JSON (PostgreSQL folds the meters from them on the server), which "
                f"compressed or enciphered state would hide; unset {name} (PostgreSQL "
                "compresses large events itself, with lz4 where the server has it)"
            )


def recorded_usage(stored_events: Sequence[StoredEvent]) -> list[int]:
    """The positions of the usage batches among a save's stored events."""
    return [i for i, e in enumerate(stored_events) if e.topic == USAGE_BATCH_RECORDED_TOPIC]


def usage_increments(usage_batches: Iterable[StoredEvent]) -> list[MeterIncrement]:
    """The meter increments of every record of these stored usage batches."""
    return [
        record.increment()
        for stored in usage_batches
        for record in UsageBatch.usage(json.loads(stored.state)["records"])
    ]


def record_unique_rows(
    records: Iterable[Sequence[str]], names: Collection[str] | None = None
) -> set[UniqueRow]:
    """`unique_rows` of stored usage records (UsageRecord lists), without an increment per
    record: only records with properties are decoded further, and only their times of those
    with a counted property. Ingest writes these inside its transaction, the lock held."""
    rows: set[UniqueRow] = set()
    # The names as the canonical properties text writes keys (ASCII, escaped): a record
    # without one of them as a substring has none of them (with one, it is decoded to see).
    keys = None if names is None else [json.dumps(name) for name in names]
    for record in records:
        if record[7] == "{}" or (keys is not None and not any(k in record[7] for k in keys)):
            continue
        values = [(name, value)
                  for name, value in property_values(json.loads(record[7]), record[0])
                  if names is None or name in names]
        if values:
            start = bucket_start(datetime.fromisoformat(record[5]))
            customer_id, metric, contract_tag = record[2], record[3], record[6]
            rows.update((customer_id, metric, contract_tag, unique_row_property(name, value),
                         value, start) for name, value in values)
    return rows


def uncounted_rows(
    records: Iterable[Sequence[str]], names: Collection[str] | None = None
) -> set[UniqueRow]:
    """The rows of `record_unique_rows` that mark values unique_count does not count."""
    return {r for r in record_unique_rows(records, names) if r[4].startswith(UNCOUNTED_MARK)}


def usage_unique_rows(
    usage_batches: Iterable[StoredEvent], names: Collection[str] | None = None
) -> set[UniqueRow]:
    """`record_unique_rows` of every record of these stored usage batches."""
    rows: set[UniqueRow] = set()
    for stored in usage_batches:
        rows |= record_unique_rows(json.loads(stored.state)["records"], names)
    return rows


def take_batch(
    stored_events: Sequence[StoredEvent], kwargs: Mapping[str, Any], *, fold_usage: bool = False
) -> tuple[StoreBatch | None, dict[str, Any]]:
    """The save kwargs split into the batch to write and the kwargs for the library.

    With `fold_usage` the batch's increments include those of the usage batches among the
    stored events (a store that folds them in the saving transaction). The batch is None when
    there is nothing to write, and always for a save without events.
    """
    rest = dict(kwargs)
    increments: Sequence[MeterIncrement] = rest.pop("meter_increments", None) or ()
    contracts: Sequence[tuple[str, str]] = rest.pop("contracts", None) or ()
    messages: Sequence[tuple[str, str]] = rest.pop("messages", None) or ()
    counted: Iterable[str] = rest.pop(COUNTED_PROPERTIES, None) or ()
    if fold_usage:
        usage = recorded_usage(stored_events)
        if usage:
            increments = [*increments, *usage_increments(stored_events[i] for i in usage)]
    if not stored_events or not (increments or contracts or messages or counted):
        return None, rest
    return StoreBatch.of(increments, contracts, messages, counted), rest
