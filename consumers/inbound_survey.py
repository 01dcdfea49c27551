"""Which records of the inbound topics are in the store, whichever group member consumes them.

A `consume` process owns only the partitions its group gives it. The others belong to other
members: live ones, which consume them, or ones that stopped answering (killed, or stopped
without leaving), which keep them until their session times out. `consume --until-caught-up`
must not call the input caught up while such a partition still holds records (QA15 H2: a
restart after three kills owned a third of the partitions, caught up with them, said "lag 0"
and exited 0; the billing run then billed a third of the book). The store holds every
partition's applied position (its tracking record), so the survey compares that with the
partition's end offset: the target is the end offset when the partition was first seen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition


@dataclass(frozen=True)
class Surveyed:
    """A partition as the last survey found it."""

    stored: int | None  # the offset of the last record applied; None: none yet
    # The first offset whose record is not in the store: stored + 1, or the partition's first
    # offset where retention deleted the records before it (they can never be consumed).
    next: int
    end: int  # the end offset (read_committed)


class InboundSurvey:
    """Every inbound partition's stored position against its target end offset."""

    def __init__(self, reader: Callable[[], Any]) -> None:
        # Makes a consumer outside the group, to look into partitions this process does not own.
        self._make_reader = reader
        self._reader: Any = None
        self.targets: dict[TopicPartition, int] = {}
        self.partitions: dict[TopicPartition, Surveyed] = {}
        self.at = -math.inf  # time.monotonic() of the last survey
        # Partitions found to hold no committed record from their next offset up to their
        # target (only transaction markers or aborted records, which are never applied), and
        # that next offset: the stored position of a caught-up partition stops short of them.
        self._empty_from: dict[TopicPartition, int] = {}

    def update(self, stored: Mapping[TopicPartition, int | None],
               begins: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]) -> None:
        """Note a survey's answers; a partition seen for the first time gets its target."""
        self.at = time.monotonic()
        self.partitions = {}
        for tp, end in ends.items():
            self.targets.setdefault(tp, end)
            after = stored[tp]
            first = max(begins[tp], 0 if after is None else after + 1)
            self.partitions[tp] = Surveyed(after, first, end)

    def lag(self, tp: TopicPartition) -> int:
        """Records of `tp` not in the store, as far as the last survey knows."""
        seen = self.partitions[tp]
        start = seen.next
        if self._empty_from.get(tp) == start:
            start = max(start, self.targets[tp])
        return max(seen.end - start, 0)

    def short(self, tp: TopicPartition) -> bool:
        """Whether the store may lack records of `tp` up to its target, as far as the last
        survey knows."""
        seen = self.partitions[tp]
        return seen.next < self.targets[tp] and self._empty_from.get(tp) != seen.next

    def in_store(self, tp: TopicPartition, timeout: float) -> bool:
        """Whether every record of `tp` up to its target is in the store.

        A partition whose stored position stops short of its target is looked into (up to
        `timeout` seconds): the offsets between may hold only transaction markers.
        """
        if not self.short(tp):
            return True
        seen = self.partitions[tp]
        if self._reader is None:
            self._reader = self._make_reader()
        if has_records(self._reader, tp, seen.next, self.targets[tp], timeout):
            return False
        self._empty_from[tp] = seen.next
        return True

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def has_records(consumer: Any, tp: TopicPartition, start: int, end: int, timeout: float) -> bool:
    """Whether offsets start..end-1 hold a committed record, not only transaction markers."""
    consumer.assign([tp])
    consumer.seek(tp, start)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and consumer.position(tp) < end:
        if any(r.offset < end for r in consumer.poll(timeout_ms=200, max_records=1).get(tp, [])):
            return True
    return bool(consumer.position(tp) < end)  # unread at the deadline: assume records wait
