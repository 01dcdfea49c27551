"""`explain --usage`: the usage events each usage line of an invoice counted, read from the log.

A line's basis says what its meter read was: the metric and aggregation, the meters' revision
(the log position through which the usage it read had been logged), and where a period was
shared with another contract, the spans whose untagged usage was its own. With the line's
service window (local midnights in the contract's timezone) and the contract and customer,
that is the read again, over the UsageBatch events logged through that revision instead of the
meters: the events listed aggregate to the line's quantity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from domain.application import BillingApplication
from domain.calendar import local_midnight
from domain.terms import Aggregation
from domain.usage import UNCOUNTED_MARK, MeterIncrement, RecordedUsage
from domain.usage_billing import aggregated
from projections.usage_log import counted, logged_usage, reading_of

TRACED = ("usage", "late_usage")


@dataclass
class _Read:
    """One line's meter read, and the usage events it counts."""

    line: dict[str, Any]
    metric: str
    aggregation: Aggregation
    unique_property: str | None
    tags: tuple[str, ...]
    start: datetime
    end: datetime
    within: tuple[tuple[datetime, datetime], ...]
    through: int
    found: list[tuple[int, MeterIncrement, RecordedUsage]] = field(default_factory=list)

    def take(self, at: int, usage: RecordedUsage) -> None:
        if usage.metric != self.metric or at > self.through:
            return
        increment = usage.increment()
        if counted(increment, self.tags, self.start, self.end, self.within):
            self.found.append((at, increment, usage))

    def to_json(self) -> dict[str, Any]:
        reading = reading_of([(at, inc) for at, inc, _ in self.found], self.unique_property)
        quantity = aggregated(self.aggregation, reading)
        events = sorted(self.found, key=lambda f: (f[2].occurred_at, f[2].message_id))
        said: dict[str, Any] = {
            "metric": self.metric, "aggregation": self.aggregation.value,
            "contract_id": self.tags[0],  # usage sent with it, and untagged usage:
            "untagged_within": None if "" in self.tags else [  # None: all of the window's
                [_utc(lo), _utc(hi)] for lo, hi in self.within],
            "from": _utc(self.start), "to": _utc(self.end), "through_position": self.through,
            "events": [self._event(at, inc, u) for at, inc, u in events],
            "quantity": str(quantity), "billed_quantity": self.line["basis"]["quantity"],
            "agrees": quantity == Decimal(self.line["basis"]["quantity"]),
        }
        if self.aggregation is Aggregation.UNIQUE_COUNT:
            said["unique_property"] = self.unique_property
            said["counted_values"] = sorted({e["counts_as"] for e in said["events"]
                                             if e["counts_as"] is not None})
        elif self.aggregation in (Aggregation.MAX, Aggregation.LATEST) and events:
            pick = (max(events, key=lambda f: f[1].quantity)
                    if self.aggregation is Aggregation.MAX
                    else max(events, key=lambda f: (f[1].occurred_at, f[1].event_id)))
            said["decided_by"] = pick[2].message_id
        return said

    def _event(self, at: int, inc: MeterIncrement, u: RecordedUsage) -> dict[str, Any]:
        event: dict[str, Any] = {
            "message_id": u.message_id, "occurred_at": _utc(u.occurred_at),
            "quantity": str(u.quantity), "contract_id": u.contract_id, "log_position": at}
        if self.aggregation is Aggregation.UNIQUE_COUNT and self.unique_property is not None:
            value = dict(inc.properties).get(self.unique_property)
            event["value"] = u.properties.get(self.unique_property)
            # An absent property, or a decimal, null, array or object, counts nobody.
            event["counts_as"] = (None if value is None or value.startswith(UNCOUNTED_MARK)
                                  else value)
        return event


def trace_usage(app: BillingApplication, explained: dict[str, Any]) -> None:
    """Add to each usage and late usage line of an `explain` document the usage events its
    meter read counted (`counted_usage`), from one pass over the log's usage."""
    invoice = explained["invoice"]
    tz = app.contract_timezone(invoice["contract_id"])
    reads = [r for line in explained["lines"]
             if (r := _read(line, invoice["contract_id"], tz)) is not None]
    through = max((r.through for r in reads), default=0)
    if through:
        for at, usage in logged_usage(app, through, {invoice["customer_id"]}):
            for r in reads:
                r.take(at, usage)
    for r in reads:
        r.line["counted_usage"] = r.to_json()


def _read(line: dict[str, Any], contract_id: str, tz: str) -> _Read | None:
    """The meter read a line's basis describes; None for a line that read no meter (not
    usage, or a credit of usage billed before)."""
    b = line["basis"]
    if line["kind"] not in TRACED or "aggregation" not in b:
        return None
    component = (line.get("terms") or {}).get("component") or {}
    spans = b.get("untagged_usage_within")
    return _Read(
        line=line, metric=b["metric"], aggregation=Aggregation(b["aggregation"]),
        unique_property=component.get("unique_property"),
        tags=(contract_id, "") if spans is None else (contract_id,),
        start=local_midnight(date.fromisoformat(line["period_start"]), tz),
        end=local_midnight(date.fromisoformat(line["period_end"]), tz),
        within=tuple(_span(s) for s in spans or ()), through=b["usage_revision"])


def _span(said: str) -> tuple[datetime, datetime]:
    """A span as a line's basis says it: "2026-10-01 00:00 to 2026-10-15 00:00 UTC"."""
    lo, hi = said.removesuffix(" UTC").split(" to ")
    return (datetime.strptime(lo, "%Y-%m-%d %H:%M").replace(tzinfo=UTC),
            datetime.strptime(hi, "%Y-%m-%d %H:%M").replace(tzinfo=UTC))


def _utc(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
