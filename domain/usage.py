"""Usage: recorded usage, running meters per 15-minute bucket, and watermarks.

The usage messages an ingest batch accepts are recorded together, as one `UsageBatch.Recorded`
event whose records are plain strings (one stored event per batch, not per message: the event
store's cost per row is most of ingest's cost). The message ids go into the store's table of
received messages in the same transaction, whose primary key makes a message id count once
ever. Billing never scans events: the store folds each record into a running `MeterBucket`
(one per customer, metric, contract tag and 15-minute UTC bucket), in the same transaction or
later from its meter backlog, always before billing reads (`BillingStore.update_meters`).
15 minutes divides every real UTC offset, so a period that starts at local midnight in any
timezone starts on a bucket boundary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from hashlib import sha256
from typing import Any, NamedTuple
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from domain.transcoding import JSONRecords

BUCKET = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)
BILLCYCLE_NS = uuid5(NAMESPACE_URL, "https://billcycle.dev/ids")


def message_aggregate_id(message_id: str) -> UUID:
    """The id of the receipt aggregate a (non-usage) message with this id creates."""
    return uuid5(BILLCYCLE_NS, f"message:{message_id}")


def usage_batch_id(first_message_id: str) -> UUID:
    """A usage batch's id, from the id of its first message: received once, ever."""
    return uuid5(BILLCYCLE_NS, f"usage-batch:{first_message_id}")


_BUCKET_SECONDS = int(BUCKET.total_seconds())


def bucket_start(instant: datetime) -> datetime:
    """The start of the 15-minute UTC bucket holding `instant`."""
    if instant.tzinfo is UTC:
        # Parsed usage is already in UTC (nearly every call): the same instant as below, in
        # two operations in C (exact: timedelta arithmetic is in whole microseconds); four
        # times cheaper than replace() with keywords.
        return instant - (instant - _EPOCH) % BUCKET
    seconds = (instant - _EPOCH) // _ONE_SECOND
    return _EPOCH + timedelta(seconds=seconds - seconds % _BUCKET_SECONDS)


# NamedTuples, not frozen dataclasses: one of each per usage message, and a tuple is built in C
# (a frozen dataclass sets each field through object.__setattr__). Equality and hashing are by
# value either way. The hot paths below build them with tuple.__new__ directly (_new): the
# same object as the class call, without the generated __new__'s Python frame (half the cost).
_new = tuple.__new__


class MeterKey(NamedTuple):
    customer_id: str
    metric: str
    contract_tag: str  # the usage's contract_id, or "" when the producer sent none
    bucket_start: datetime


class MeterIncrement(NamedTuple):
    """One usage event's contribution to its bucket."""

    key: MeterKey
    quantity: Decimal
    occurred_at: datetime
    event_id: str
    properties: tuple[tuple[str, str], ...]  # for unique_count: `property_values`


class MeterBucket(NamedTuple):
    """Running aggregates of one bucket: enough for sum, count, max and latest."""

    quantity_sum: Decimal
    event_count: int
    quantity_max: Decimal
    latest_at: datetime
    latest_event_id: str
    latest_quantity: Decimal

    @classmethod
    def of(cls, inc: MeterIncrement) -> MeterBucket:
        return cls(inc.quantity, 1, inc.quantity, inc.occurred_at, inc.event_id, inc.quantity)

    def add(self, inc: MeterIncrement) -> MeterBucket:
        return self.merge(MeterBucket.of(inc))

    def merge(self, other: MeterBucket) -> MeterBucket:
        later = (other.latest_at, other.latest_event_id) > (self.latest_at, self.latest_event_id)
        return MeterBucket(
            quantity_sum=self.quantity_sum + other.quantity_sum,
            event_count=self.event_count + other.event_count,
            quantity_max=max(self.quantity_max, other.quantity_max),
            latest_at=other.latest_at if later else self.latest_at,
            latest_event_id=other.latest_event_id if later else self.latest_event_id,
            latest_quantity=other.latest_quantity if later else self.latest_quantity,
        )


def fold_increments(increments: list[MeterIncrement]) -> dict[MeterKey, MeterBucket]:
    """Fold a batch of increments into one bucket delta per key (one write per key).

    The same result as `MeterBucket.of` then `.add` per increment, accumulated in a mutable
    list per key so that a bucket is built once, not once per increment.
    """
    acc: dict[MeterKey, list[Any]] = {}
    for key, quantity, at, event_id, _ in increments:
        a = acc.get(key)
        if a is None:
            acc[key] = [quantity, 1, quantity, at, event_id, quantity]
            continue
        a[0] += quantity
        a[1] += 1
        if quantity > a[2]:
            a[2] = quantity
        if (at, event_id) > (a[3], a[4]):
            a[3], a[4], a[5] = at, event_id, quantity
    return {key: _new(MeterBucket, a) for key, a in acc.items()}


@dataclass(frozen=True)
class MeterReading:
    """Usage of one metric over a time range, as billing sees it."""

    quantity_sum: Decimal = Decimal(0)
    event_count: int = 0
    quantity_max: Decimal = Decimal(0)
    latest_quantity: Decimal = Decimal(0)
    unique_count: int = 0
    revision: int = 0  # the highest log position that changed any bucket read
    # Where a period is shared: the spans whose untagged usage was read (the rest is another
    # contract's); None where all of the period's untagged usage was.
    untagged_within: tuple[tuple[datetime, datetime], ...] | None = None
    # Events whose unique_count property holds a value it does not count, and the least of
    # their marks (`uncounted_mark`): one of them to name.
    uncounted: int = 0
    uncounted_first: str | None = None


@dataclass(frozen=True)
class MeterRequest:
    """One meter read: a customer's metric over [start, end) for some contract tags, and
    untagged usage within the windows of `untagged_within` besides (the spans of a shared
    period whose untagged usage is the reading contract's: domain/meter_reads.py)."""

    customer_id: str
    metric: str
    contract_tags: tuple[str, ...]
    start: datetime
    end: datetime
    unique_property: str | None
    untagged_within: tuple[tuple[datetime, datetime], ...] = ()


# One usage message as a UsageBatch records it: message id, fingerprint, customer id, metric,
# quantity (the Decimal's str: exact), occurred_at (ISO 8601, UTC), contract id ("" for none)
# and the properties as JSON text. Strings only, so encoding a batch is one pass of the JSON
# encoder in C, and properties keep their exact JSON whatever keys they hold.
UsageRecord = tuple[str, str, str, str, str, str, str, str]


def usage_record(
    message_id: str,
    fingerprint: str,
    customer_id: str,
    metric: str,
    quantity: Decimal,
    occurred_at: datetime,
    properties_json: str,
    contract_id: str | None,
    occurred_at_iso: str = "",
) -> UsageRecord:
    """`properties_json`: the properties as JSON text with sorted keys, as the fingerprint
    has them already; `occurred_at_iso`: `occurred_at.isoformat()` if the caller has it
    (an aware datetime's isoformat costs about 2 us, per message)."""
    return (
        message_id, fingerprint, customer_id, metric, str(quantity),
        occurred_at_iso or occurred_at.isoformat(), contract_id or "", properties_json,
    )


@dataclass(frozen=True)
class RecordedUsage:
    """One record of a UsageBatch, decoded."""

    message_id: str
    fingerprint: str
    customer_id: str
    metric: str
    quantity: Decimal
    occurred_at: datetime
    contract_id: str | None
    properties: dict[str, Any]

    @classmethod
    def of(cls, record: Sequence[str]) -> RecordedUsage:
        message_id, fingerprint, customer_id, metric, quantity, at, contract, props = record
        return cls(
            message_id, fingerprint, customer_id, metric, Decimal(quantity),
            datetime.fromisoformat(at), contract or None, json.loads(props),
        )

    def increment(self) -> MeterIncrement:
        return meter_increment(
            self.customer_id, self.metric, self.contract_id, self.quantity, self.occurred_at,
            self.message_id, self.properties,
        )


# Before usage was batched, each usage message was one `UsageEvent` aggregate whose
# `Recorded` event held the message's fields (message_id, fingerprint, customer_id, metric,
# quantity, occurred_at, properties, contract_id). Stores written then still hold them.
LEGACY_USAGE_EVENT_TOPIC = "domain.usage:UsageEvent.Recorded"


class UsageBatch(Aggregate):
    """The usage messages one ingest batch accepted, recorded once, in message order."""

    @event("Recorded")
    def __init__(self, records: list[UsageRecord]) -> None:
        self.records = records

    @classmethod
    def recorded(cls, records: list[UsageRecord]) -> Any:
        """The `Recorded` event alone, without building the aggregate (never needed)."""
        return cls.Recorded(  # type: ignore[attr-defined]
            originator_id=usage_batch_id(records[0][0]),
            originator_version=1,
            originator_topic=_USAGE_BATCH_TOPIC,
            timestamp=cls.Recorded.create_timestamp(),  # type: ignore[attr-defined]
            records=JSONRecords(records),  # tuples of str: the encoder need not walk them
        )

    @staticmethod
    def usage(records: Sequence[Sequence[str]]) -> list[RecordedUsage]:
        """A stored batch's records, decoded (JSON gives them back as lists)."""
        return [RecordedUsage.of(r) for r in records]


_SCALAR_PROPERTY = (str, int)  # bool is an int: true and false are counted values too


def property_values(
    properties: dict[str, Any], message_id: str
) -> tuple[tuple[str, str], ...]:
    """The properties as the store keeps them for unique_count: a string, integer or boolean
    value as its text (`value_text`, `counted_value`), any other value as the message's
    uncounted mark (`uncounted_mark`)."""
    # Order does not matter: these only become the set of a bucket's unique values.
    return tuple([
        (name, counted_value(value_text(value))
         if isinstance(value, _SCALAR_PROPERTY) else uncounted_mark(value, message_id))
        for name, value in properties.items()
    ]) if properties else ()


def value_text(value: str | int) -> str:
    """A counted value's text as JSON writes it: 7 and "7" are one value, and so are true and
    "true" (Python's str(True) is "True": store format 2 respelled what earlier versions kept)."""
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    return str(value)


# A counted value is kept as it is unless the store's key could not hold it: U+0000, which
# PostgreSQL's text refuses (one such value stopped ingest for good), or more bytes than an
# index entry takes beside the key's names. Those are kept as a digest, marked by a leading
# U+0001 that a value kept as it is never has: distinct values stay distinct, so counts hold.
DIGEST_MARK = "\x01"
MAX_COUNTED_VALUE_BYTES = 256


def counted_value(value: str) -> str:
    """The text a counted property's value is stored as (itself, nearly always)."""
    if "\x00" in value or value.startswith(DIGEST_MARK) or (
            # At most 4 bytes a character: a short value needs no encoding to be measured.
            len(value) * 4 > MAX_COUNTED_VALUE_BYTES
            and len(value.encode("utf-8", "surrogatepass")) > MAX_COUNTED_VALUE_BYTES):
        return DIGEST_MARK + "sha256:" + sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return value


# A value unique_count does not count (a decimal, null, array or object: which one the
# producer meant by 1.5 or [1] is not ours to guess, and a decimal was read as a binary float,
# so distinct decimals may have become one) is kept, per message, as a mark of its kind and
# the message id, beside the counted values and never counted with them: a meter read says
# how many events of a period it left uncounted and names one (`MeterReading.uncounted`).
# Like a digest it starts with DIGEST_MARK, which no value kept as it is has.
UNCOUNTED_MARK = DIGEST_MARK + "uncounted:"
_UNCOUNTED_KINDS = {float: "decimal", type(None): "null", list: "array", dict: "object"}
_MARKED_ID_BYTES = 200  # a longer message id is marked by its digest: the key's size


def uncounted_mark(value: Any, message_id: str) -> str:
    """The mark a value unique_count does not count is kept as: its kind and its message."""
    kind = _UNCOUNTED_KINDS.get(type(value), "value")
    if len(message_id.encode("utf-8", "surrogatepass")) > _MARKED_ID_BYTES:
        message_id = "sha256:" + sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{UNCOUNTED_MARK}{kind}:{message_id}"


def uncounted_property(name: str) -> str:
    """The property name the store keeps a property's uncounted marks under. Not the name
    itself: a billcycle before the marks (a rollback) counts every value kept under the name
    as a distinct one, and would have billed each marked event as one more. No property name
    starts with DIGEST_MARK (names hold no control characters)."""
    return UNCOUNTED_MARK + name


def unique_row_property(name: str, value: str) -> str:
    """The property a (name, value) of `property_values` is kept under in the store."""
    return uncounted_property(name) if value.startswith(UNCOUNTED_MARK) else name


_KIND_SAID = {"decimal": "a decimal", "null": "null", "array": "an array", "object": "an object"}


def uncounted_example(mark: str) -> str:
    """What a mark says of its message: 'u-1 (a decimal)'."""
    kind, _, message_id = mark.removeprefix(UNCOUNTED_MARK).partition(":")
    return f"{message_id} ({_KIND_SAID.get(kind, 'a value of another kind')})"


def meter_increment(
    customer_id: str,
    metric: str,
    contract_id: str | None,
    quantity: Decimal,
    occurred_at: datetime,
    message_id: str,
    properties: dict[str, Any],
) -> MeterIncrement:
    return _new(MeterIncrement, (
        _new(MeterKey, (customer_id, metric, contract_id or "", bucket_start(occurred_at))),
        quantity, occurred_at, message_id, property_values(properties, message_id),
    ))


_USAGE_BATCH_TOPIC = get_topic(UsageBatch)
USAGE_BATCH_RECORDED_TOPIC = get_topic(UsageBatch.Recorded)  # type: ignore[attr-defined]

# The save kwarg naming the usage properties whose distinct values the saved contract events
# count (unique_count components); BillingApplication adds it to every such save.
COUNTED_PROPERTIES = "counted_properties"
