"""Message receipts (one per message id, ever), dead letters and usage watermarks."""

from __future__ import annotations

from datetime import datetime
from hashlib import sha256
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
