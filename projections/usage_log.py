"""Usage read from the log itself, not from the meters: the UsageBatch events (and the
per-message usage events of stores written before usage was batched) up to a log position,
and which of their records a meter read counts. `batch verify` bills from them again;
`explain --usage` lists the usage events a line counted.

There is no index of the log by customer: every usage event up to the position is read, a page
at a time (bounded memory), and a batch whose stored text does not name the customer is
skipped without being decoded.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime

from domain.application import BillingApplication
from domain.usage import (
    LEGACY_USAGE_EVENT_TOPIC,
    UNCOUNTED_MARK,
    USAGE_BATCH_RECORDED_TOPIC,
    MeterBucket,
    MeterIncrement,
    MeterReading,
    RecordedUsage,
    UsageBatch,
)
from infra.store.batch import exact_decimals

USAGE_TOPICS = (USAGE_BATCH_RECORDED_TOPIC, LEGACY_USAGE_EVENT_TOPIC)
PAGE = 50  # usage batches of up to a few hundred kB each: a page stays a few MB


def logged_usage(app: BillingApplication, through: int, customers: Collection[str],
                 page: int = PAGE) -> Iterator[tuple[int, RecordedUsage]]:
    """The usage of these customers logged at or before position `through`, in log order,
    with the position of the event recording each."""
    marks = _marks(customers)
    after = 0
    while True:
        found = app.recorder.select_notifications(
            start=after, limit=page, stop=through, topics=USAGE_TOPICS, inclusive_of_start=False)
        for n in found:
            if n.topic == LEGACY_USAGE_EVENT_TOPIC:
                u = app.mapper.transcoder.decode(n.state)
                if u["customer_id"] in customers:
                    yield n.id, RecordedUsage(
                        u["message_id"], u["fingerprint"], u["customer_id"], u["metric"],
                        u["quantity"], u["occurred_at"], u["contract_id"], u["properties"])
                continue
            if marks is not None and not any(m in n.state for m in marks):
                continue  # the batch holds none of their usage
            # Records are [message id, fingerprint, customer id, ...]: others' usage is
            # skipped before it is decoded.
            records = json.loads(n.state)["records"]
            for usage in UsageBatch.usage([r for r in records if r[2] in customers]):
                yield n.id, usage
        if len(found) < page:
            return
        after = found[-1].id


def _marks(customers: Collection[str]) -> list[bytes] | None:
    """Each customer id as the stored JSON of a usage record spells it (compact JSON, UTF-8,
    the usual escapes); None, so that every batch is decoded, for an id JSON would escape."""
    marks = []
    for customer in customers:
        if any(c in '"\\' or ord(c) < 0x20 or 0xD800 <= ord(c) < 0xE000 for c in customer):
            return None
        marks.append(json.dumps(customer, ensure_ascii=False).encode())
    return marks


def counted(increment: MeterIncrement, tags: Sequence[str], start: datetime | None,
            end: datetime, untagged_within: Sequence[tuple[datetime, datetime]] = ()) -> bool:
    """Whether a meter read of these contract tags over [start, end), and of untagged usage
    within `untagged_within` besides, counts this usage (its customer and metric already
    matched): the stores' meter reads, bucket by bucket."""
    key = increment.key
    return ((key.contract_tag in tags or (key.contract_tag == "" and any(
                lo <= key.bucket_start < hi for lo, hi in untagged_within)))
            and key.bucket_start < end and (start is None or start <= key.bucket_start))


def reading_of(found: Sequence[tuple[int, MeterIncrement]],
               unique_property: str | None) -> MeterReading:
    """The meter reading of these increments (each with its log position), as the stores'
    meters would give it."""
    if not found:
        return MeterReading()
    with exact_decimals():
        total = MeterBucket.of(found[0][1])
        for _, inc in found[1:]:
            total = total.add(inc)
    values = {v for _, inc in found for name, v in inc.properties if name == unique_property}
    marks = {v for v in values if v.startswith(UNCOUNTED_MARK)}
    return MeterReading(
        quantity_sum=total.quantity_sum, event_count=total.event_count,
        quantity_max=total.quantity_max, latest_quantity=total.latest_quantity,
        unique_count=len(values) - len(marks), revision=max(at for at, _ in found),
        uncounted=len(marks), uncounted_first=min(marks, default=None))
