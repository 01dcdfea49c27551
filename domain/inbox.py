"""Message receipts (one per message id, ever), dead letters and usage watermarks."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
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


class RetirementRejected(ValueError):
    """A source retirement that cannot be recorded, with what to give instead."""


@dataclass(frozen=True)
class RetiredSource:
    """A watermark source the operator retired: it bounds its metric no more."""

    metric: str
    source: str
    complete_through: datetime  # its mark when retired, kept for the record
    reason: str
    by: str
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "source": self.source,
                "complete_through": self.complete_through.isoformat(), "reason": self.reason,
                "by": self.by, "at": self.at.isoformat()}


@dataclass(frozen=True)
class Retirement:
    """What retiring a source did: `recorded` False where it was retired already (the
    retirement in force is kept), and the metric's watermark before and after."""

    retired: RetiredSource
    recorded: bool
    was: datetime
    now: datetime
    active: dict[str, datetime]  # the metric's sources still bounding it


class UsageWatermarks(Aggregate):
    """Per metric and source, the instant before which all usage has been sent. A metric is
    complete only as far as its slowest active source says (docs/accounting.md, "Usage
    completeness"); a watermark sent without `source` is the source `""`, shown `(unnamed)`.
    The operator may retire a source that will send no more; a retired source that sends a
    watermark is active again."""

    # 2: sources can be retired (snapshots of version 1 have no `retired`).
    class_version = 2

    @staticmethod
    def create_id() -> UUID:
        return WATERMARKS_ID

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["retired"] = {}

    @event("Opened")
    def __init__(self) -> None:
        self.marks: dict[str, dict[str, datetime]] = {}
        # metric -> source -> {"at", "by", "reason"}, in the order retired: a metric with no
        # active source keeps the mark of the source retired last.
        self.retired: dict[str, dict[str, dict[str, Any]]] = {}

    def declare(self, metric: str, source: str, complete_through: datetime) -> bool:
        """Whether the watermark changed anything: advanced its source's mark (an older one
        says nothing new) or, from a retired source, made it active again."""
        if source in self.retired.get(metric, {}):
            # Whatever it declares: a source that still sends watermarks may still send usage.
            self._reactivated(metric=metric, source=source, complete_through=complete_through)
            return True
        current = self.marks.get(metric, {}).get(source)
        if current is None or complete_through > current:
            self._advanced(metric=metric, source=source, complete_through=complete_through)
            return True
        return False

    @event("Advanced")
    def _advanced(self, metric: str, source: str, complete_through: datetime) -> None:
        self.marks.setdefault(metric, {})[source] = complete_through

    @event("Reactivated")
    def _reactivated(self, metric: str, source: str, complete_through: datetime) -> None:
        sources = self.marks[metric]
        sources[source] = max(sources[source], complete_through)  # a mark only moves forward
        del self.retired[metric][source]
        if not self.retired[metric]:
            del self.retired[metric]

    def retire(self, metric: str, source: str, reason: str, by: str,
               at: datetime) -> Retirement:
        """Stop `source` bounding `metric` (a producer decommissioned, or one sent by
        mistake): the metric is then complete as far as its slowest active source says, or,
        with none left, stays where it was."""
        sources = self.marks.get(metric)
        if sources is None:
            known = ", ".join(sorted(self.marks)) or "none"
            raise RetirementRejected(
                f"no watermark of metric {escaped(metric)} has been received (metrics with "
                f"watermarks: {escaped(known)}); check the metric's name (`billcycle "
                "watermarks` lists them)")
        if source not in sources:
            known = ", ".join(shown_source(s) for s in sorted(sources))
            raise RetirementRejected(
                f"metric {escaped(metric)} has no watermark source {shown_source(source)} (its "
                f"sources: {known}); check the name (`billcycle watermarks` lists them; "
                "--source '' names the one sent without `source`)")
        was = self.by_metric()[metric]
        if source in self.retired.get(metric, {}):
            return Retirement(self._retired_source(metric, source), False, was, was,
                              self.active(metric))
        if not reason.strip():
            raise RetirementRejected(
                "give the reason the source is retired (e.g. 'metering-v1 decommissioned on "
                "2026-11-30, replaced by metering-v2'): it is kept in the log for auditors")
        self._retired(metric=metric, source=source, reason=reason.strip(),
                      by=by.strip() or "unknown", at=at)
        return Retirement(self._retired_source(metric, source), True, was,
                          self.by_metric()[metric], self.active(metric))

    @event("Retired")
    def _retired(self, metric: str, source: str, reason: str, by: str, at: datetime) -> None:
        self.retired.setdefault(metric, {})[source] = {"at": at, "by": by, "reason": reason}

    def _retired_source(self, metric: str, source: str) -> RetiredSource:
        return RetiredSource(metric, source, self.marks[metric][source],
                             **self.retired[metric][source])

    def retirements(self, metric: str) -> list[RetiredSource]:
        """The metric's retired sources, in the order retired."""
        return [self._retired_source(metric, s) for s in self.retired.get(metric, {})]

    def retirement(self, metric: str, source: str) -> RetiredSource | None:
        """The source's retirement in force, if it is retired."""
        if source not in self.retired.get(metric, {}):
            return None
        return self._retired_source(metric, source)

    def active(self, metric: str) -> dict[str, datetime]:
        """The metric's sources that bound it: all but those retired."""
        retired = self.retired.get(metric, {})
        return {s: t for s, t in self.marks.get(metric, {}).items() if s not in retired}

    def by_metric(self) -> dict[str, datetime]:
        """A metric is complete only as far as its slowest active source says; with none
        active, where the last one retired left it: retiring never declares usage sent that
        no active source has declared sent."""
        return {metric: _completeness(self.active(metric), sources,
                                      self.retired.get(metric, {}))
                for metric, sources in self.marks.items()}


def _completeness(active: Mapping[str, datetime], sources: Mapping[str, datetime],
                  retired: dict[str, Any]) -> datetime:
    if active:
        return min(active.values())
    return sources[next(reversed(retired))]


def sources_record(marks: UsageWatermarks | None) -> dict[str, dict[str, str]]:
    """Each metric's sources and their watermarks (retired ones too) as a batch's manifest
    records them."""
    return {metric: {source: t.isoformat() for source, t in sorted(sources.items())}
            for metric, sources in (marks.marks if marks else {}).items()}


def retired_record(marks: UsageWatermarks | None) -> dict[str, dict[str, dict[str, str]]]:
    """Each metric's retired sources, with when, by whom and why, as a batch's manifest
    records them (`retired_watermark_sources`), in the order retired."""
    return {metric: {source: {"at": r["at"].isoformat(), "by": r["by"], "reason": r["reason"]}
                     for source, r in retired.items()}
            for metric, retired in (marks.retired if marks else {}).items()}


def watermarks_listing(marks: UsageWatermarks | None) -> list[dict[str, Any]]:
    """Each metric's watermark and its sources, the slowest active first, then the retired
    ones with when, by whom and why: what `billcycle watermarks` lists."""
    if marks is None:
        return []
    listing = []
    for metric, complete in sorted(marks.by_metric().items()):
        active = marks.active(metric)
        sources: list[dict[str, Any]] = [
            {"source": s, "complete_through": active[s].isoformat(), "active": True,
             "slowest": active[s] == complete, "retired": None} for s in slowest_first(active)]
        sources += [{"source": r.source, "complete_through": r.complete_through.isoformat(),
                     "active": False, "slowest": False,
                     "retired": {"at": r.at.isoformat(), "by": r.by, "reason": r.reason}}
                    for r in marks.retirements(metric)]
        listing.append({"metric": metric, "complete_through": complete.isoformat(),
                        "sources": sources})
    return listing


def recorded_sources(record: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, datetime]]:
    """The sources' watermarks of a manifest's `sources_record`."""
    return {metric: {source: datetime.fromisoformat(t) for source, t in sources.items()}
            for metric, sources in record.items()}


def context_sources(manifest: Mapping[str, Any]) -> tuple[
        dict[str, dict[str, datetime]], dict[str, dict[str, datetime]] | None]:
    """A batch's sources as its hold reasons read them: each metric's active sources and its
    retired ones, with their marks. The retired are None for a batch begun before sources
    could be retired, whose reasons name no retirement (`batch verify` bills it so)."""
    sources = recorded_sources(manifest.get("watermark_sources", {}))
    if "retired_watermark_sources" not in manifest:
        return sources, None
    retired = manifest["retired_watermark_sources"]
    active = {metric: {s: t for s, t in marks.items() if s not in retired.get(metric, {})}
              for metric, marks in sources.items()}
    return ({m: marks for m, marks in active.items() if marks},
            {metric: {s: sources[metric][s] for s in gone} for metric, gone in retired.items()})


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


def lagging_watermark(watermark: datetime, end_at: datetime,
                      sources: Mapping[str, datetime] | None,
                      retired: Mapping[str, datetime] | None, metric: str) -> tuple[str, str]:
    """For a hold: the metric's watermark with the source it comes from (and, where it has
    several active, the others' marks), and the watermarks that would release the period
    ending at `end_at`, one from each source behind it; where another source has reached
    `end_at`, the command that retires those behind. `sources`: the active ones; `retired`:
    None for a batch begun before sources could be retired, whose reasons said neither."""
    if not sources:
        if retired:  # every source retired: the metric stays where the last one left it
            every = ("its one source is" if len(retired) == 1
                     else f"all {len(retired)} of its sources are")
            return (f"its watermark {watermark.isoformat()} ({every} retired: it stays where "
                    "the last one retired left it)",
                    f"usage.watermark complete_through >= {end_at.isoformat()} (from any "
                    "source; a retired one that sends it is active again)")
        # A batch begun before runs recorded the sources: its reasons as they were.
        return (f"its watermark {watermark.isoformat()}",
                f"usage.watermark complete_through >= {end_at.isoformat()}")
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
    if retired is not None and len(behind) < len(ordered):
        sends += f" ({_retire_hint(metric, behind)})"
    return its, sends


def retire_command(metric: str, source: str) -> str:
    """The command that retires a metric's source, quoted for a shell."""
    return (f"billcycle watermarks retire --metric {shlex.quote(metric)} --source "
            f"{shlex.quote(source)} --reason ...")


def _retire_hint(metric: str, behind: list[str]) -> str:
    """How the sources behind stop holding a period that another source has reached."""
    if len(behind) == 1:
        return (f"or, if source {shown_source(behind[0])} will send no more, retire it: "
                f"`{escaped(retire_command(metric, behind[0]))}`")
    return ("or, if those sources will send no more, retire each: "
            f"`{escaped(retire_command(metric, 'SOURCE'))}`")


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


def reactivation_note(named: str, retired: RetiredSource, was: datetime,
                      now: datetime) -> str:
    """What an operator is told of a watermark from a retired source (`named`: the message):
    the source is active again, so it bounds its metric again."""
    metric, source = retired.metric, retired.source
    moved = (f"still complete before {now.isoformat()}" if now == was else
             f"now complete before {now.isoformat()} (was before {was.isoformat()})")
    return (f"{named}: source {shown_source(source)} of {metric}, retired on "
            f"{retired.at.isoformat()} by {escaped(retired.by)} ({escaped(retired.reason)}), "
            f"sent a watermark, so it is active again and bounds {metric}: {metric} is {moved}; "
            "if that producer is decommissioned, stop it, then retire the source again: "
            f"`{escaped(retire_command(metric, source))}`")
