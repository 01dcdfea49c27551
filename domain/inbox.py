"""Message receipts (one per message id, ever), dead letters and usage watermarks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from hashlib import sha256
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.reasons import escaped
from domain.usage import BILLCYCLE_NS, message_aggregate_id


class MessageReceipt(Aggregate):
    """Proof a message id was processed, with its content fingerprint for conflict checks."""

    @staticmethod
    def create_id(message_id: str) -> UUID:
        return message_aggregate_id(message_id)

    @event("Received")
    def __init__(self, message_id: str, message_type: str, fingerprint: str) -> None:
        self.message_id = message_id
        self.message_type = message_type
        self.fingerprint = fingerprint


def dead_letter_id(position: str, raw: str) -> UUID:
    """The same input at the same position is one dead letter; other input at a position
    already used (another file of the same name, stdin again) is another."""
    return uuid5(BILLCYCLE_NS, f"dead-letter:{position}:{sha256(raw.encode()).hexdigest()}")


class DeadLetter(Aggregate):
    """Rejected input, with where it came from and why, kept so nothing is silently lost.

    One aggregate per source position and input: the same input rejected again is kept once,
    and writers rejecting different input never contend.
    """

    @staticmethod
    def create_id(position: str, raw: str) -> UUID:
        return dead_letter_id(position, raw)

    @event("Rejected")
    def __init__(
        self,
        position: str,
        source: str,
        at: str,
        message_id: str | None,
        reason: str,
        raw: str,
        raw_encoding: str,
    ) -> None:
        self.entry: dict[str, Any] = {
            "position": position,
            "source": source,
            "at": at,
            "message_id": message_id,
            "reason": reason,
            "raw": raw,
            "raw_encoding": raw_encoding,
        }


WATERMARKS_ID = uuid5(BILLCYCLE_NS, "usage-watermarks")


class UsageWatermarks(Aggregate):
    """Per metric and source, the instant before which all usage has been sent. A metric is
    complete only as far as its slowest source says (docs/accounting.md, "Usage
    completeness"); a watermark sent without `source` is the source `""`, shown `(unnamed)`."""

    @staticmethod
    def create_id() -> UUID:
        return WATERMARKS_ID

    @event("Opened")
    def __init__(self) -> None:
        self.marks: dict[str, dict[str, datetime]] = {}

    def declare(self, metric: str, source: str, complete_through: datetime) -> bool:
        """Whether the watermark advanced its source's (an older one says nothing new)."""
        current = self.marks.get(metric, {}).get(source)
        if current is None or complete_through > current:
            self._advanced(metric=metric, source=source, complete_through=complete_through)
            return True
        return False

    @event("Advanced")
    def _advanced(self, metric: str, source: str, complete_through: datetime) -> None:
        self.marks.setdefault(metric, {})[source] = complete_through

    def by_metric(self) -> dict[str, datetime]:
        """A metric is complete only as far as its slowest source says."""
        return {metric: min(sources.values()) for metric, sources in self.marks.items()}


def sources_record(marks: UsageWatermarks | None) -> dict[str, dict[str, str]]:
    """Each metric's sources and their watermarks as a batch's manifest records them."""
    return {metric: {source: t.isoformat() for source, t in sorted(sources.items())}
            for metric, sources in (marks.marks if marks else {}).items()}


def recorded_sources(record: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, datetime]]:
    """The sources' watermarks of a manifest's `sources_record`."""
    return {metric: {source: datetime.fromisoformat(t) for source, t in sources.items()}
            for metric, sources in record.items()}


def shown_source(source: str) -> str:
    """A watermark source as reasons and notes name it: `(unnamed)` for watermarks sent
    without `source`."""
    return f"`{escaped(source)}`" if source else "(unnamed)"


def with_source(source: str) -> str:
    """How a watermark for `source` is sent, as reasons and notes say it."""
    return f"with source {shown_source(source)}" if source else "with no source"


def slowest_first(sources: Mapping[str, datetime]) -> list[str]:
    """A metric's sources, the one bounding it first."""
    return sorted(sources, key=lambda s: (sources[s], s))


def lagging_watermark(sources: Mapping[str, datetime], end_at: datetime) -> tuple[str, str]:
    """For a hold: the metric's watermark with the source it comes from (and, where it has
    several, the others' marks), and the watermarks that would release the period ending at
    `end_at`, one from each source behind it."""
    ordered = slowest_first(sources)
    slowest = ordered[0]
    its = (f"its watermark {sources[slowest].isoformat()} from source "
           f"{shown_source(slowest)}")
    if len(ordered) > 1:
        others = ", ".join(f"{shown_source(s)} is at {sources[s].isoformat()}"
                           for s in ordered[1:])
        its += f" (the slowest of its {len(ordered)} sources; {others})"
    behind = [s for s in ordered if sources[s] < end_at]
    sends = (f"usage.watermark complete_through >= {end_at.isoformat()} "
             + ", and one ".join(with_source(s) for s in behind))
    return its, sends


def watermark_note(named: str, metric: str, source: str, declared: datetime,
                   was: datetime | None, sources: Mapping[str, datetime]) -> str | None:
    """What an operator is told of an accepted watermark (`named`: the message) that advanced
    its source's (`sources`, after it) but that another source keeps from taking effect: its
    metric's watermark did not move (another source is behind) or moved back (the first
    watermark of a source behind the others); None when it took effect."""
    now = min(sources.values())
    if was is None or not (now < was or now == was < declared):
        return None
    slowest = slowest_first(sources)[0]
    of_sources = (f"a metric is complete only as far as the slowest of its sources says "
                  f"({metric} has {len(sources)}; docs/accounting.md, Usage completeness)")
    if now < was:
        return (f"{named}: the first watermark of {metric} from source {shown_source(source)}, "
                f"through {declared.isoformat()}, puts {metric} back from complete before "
                f"{was.isoformat()} to before {now.isoformat()}: {of_sources}; its usage "
                f"periods ending after {now.isoformat()} are held until this source's "
                "watermark reaches them; if this source is not one of the metric's producers, "
                "check the message's `source`")
    return (f"{named}: {metric} stays complete only before {now.isoformat()}, the watermark "
            f"of source {shown_source(slowest)}, not through {declared.isoformat()} as "
            f"declared {with_source(source)}: {of_sources}; if this message speaks for source "
            f"{shown_source(slowest)}, send it again {with_source(slowest)} and a new id")
