"""Message receipts (one per message id, ever), dead letters and usage watermarks."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

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


DEAD_LETTERS_ID = uuid5(BILLCYCLE_NS, "dead-letters")


class DeadLetters(Aggregate):
    """Rejected input, with where it came from and why, kept so nothing is silently lost."""

    @staticmethod
    def create_id() -> UUID:
        return DEAD_LETTERS_ID

    @event("Opened")
    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    def reject(self, entries: list[dict[str, Any]]) -> None:
        """Keep new rejections; the same source position rejected again is kept once."""
        fresh = [e for e in entries if e["position"] not in self.entries]
        if fresh:
            self._rejected(entries=fresh)

    @event("Rejected")
    def _rejected(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            self.entries[entry["position"]] = entry


WATERMARKS_ID = uuid5(BILLCYCLE_NS, "usage-watermarks")


class UsageWatermarks(Aggregate):
    """Per metric and source, the instant before which all usage has been sent."""

    @staticmethod
    def create_id() -> UUID:
        return WATERMARKS_ID

    @event("Opened")
    def __init__(self) -> None:
        self.marks: dict[str, dict[str, datetime]] = {}

    def declare(self, metric: str, source: str, complete_through: datetime) -> None:
        current = self.marks.get(metric, {}).get(source)
        if current is None or complete_through > current:
            self._advanced(metric=metric, source=source, complete_through=complete_through)

    @event("Advanced")
    def _advanced(self, metric: str, source: str, complete_through: datetime) -> None:
        self.marks.setdefault(metric, {})[source] = complete_through

    def by_metric(self) -> dict[str, datetime]:
        """A metric is complete only as far as its slowest source says."""
        return {metric: min(sources.values()) for metric, sources in self.marks.items()}
