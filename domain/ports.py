"""What the billing application needs from its store beyond the event log.

The adapters are in infra/store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from domain.billing_run import BillingRun
from domain.inbox import DeadLetter
from domain.unbilled_usage import MeteredUsage, UsageWithoutContract
from domain.usage import MeterReading, MeterRequest

# The topics whose events a store indexes apart from the rest of the log, by the index's name
# (after the events table's): a few events each, read whole (`indexed_events`) in a log of
# millions. An index is made at every open (IF NOT EXISTS), so a topic added here is indexed
# in a store made before it at its first open.
INDEXED_TOPICS: Mapping[str, str] = {
    # every run's start lists its cycle date's batches
    "batch_started": get_topic(BillingRun.Started),  # type: ignore[attr-defined]
    # billcycle deadletters, and the consumer's sends to the dead-letter topic
    "dead_letter": get_topic(DeadLetter.Rejected),  # type: ignore[attr-defined]
}


class BillingStore(Protocol):
    """Usage meters and the contract index, kept in the same transactions as the events.

    Recorded usage reaches the meters either in its own transaction or later, from the meter
    backlog: meter reads see every usage recorded before the last `update_meters`.
    """

    def update_meters(self, most: int | None = None) -> int:
        """Fold the usage recorded but not yet in the meters (the meter backlog) into them;
        the usage batches folded. Reads that follow see all usage recorded before the call
        (with `most`: only the oldest batches, about that many; for a caller that must be
        able to stop soon)."""

    def read_meter(
        self,
        customer_id: str,
        metric: str,
        contract_tags: Sequence[str],
        start: datetime,
        end: datetime,
        unique_property: str | None,
        untagged_within: Sequence[tuple[datetime, datetime]] = (),
    ) -> MeterReading:
        """Aggregates of buckets in [start, end) for these contract tags ("" = untagged),
        with the untagged buckets within `untagged_within`'s windows besides."""

    def read_meters(self, requests: Sequence[MeterRequest]) -> list[MeterReading]:
        """Many `read_meter`s in one round trip, in the order asked."""

    def changed_buckets(
        self,
        customer_id: str,
        metric: str,
        contract_tags: Sequence[str],
        since_revision: int,
        before: datetime,
    ) -> list[datetime]:
        """Starts of buckets before `before` changed at a log position after `since_revision`."""

    def contract_ids(self, after: str | None, limit: int) -> list[str]:
        """Contract ids in ascending order, for paging through the book."""

    def customer_contract_ids(self, customer_ids: Sequence[str]) -> dict[str, list[str]]:
        """Ids of each customer's contracts (customers with none are left out)."""

    def metered_usage(
        self, customer_ids: Sequence[str],
        since: Mapping[tuple[str, str], datetime] | None = None,
    ) -> dict[str, dict[str, MeteredUsage]]:
        """Per customer, their usage in the meters per metric (none: left out); of a
        (customer, metric) in `since`, only the buckets starting at or after its instant
        (the rest acknowledged: domain/acknowledgements.py), said by `read_from`."""

    def usage_without_contract(self) -> list[UsageWithoutContract]:
        """The meters of customers no contract belongs to, per customer and metric, in that
        order (usage in the meter backlog is left out: `update_meters` first)."""

    def received_messages(self, message_ids: Sequence[str]) -> dict[str, str]:
        """The fingerprint of each of these message ids received before (others left out)."""

    def first_versions(self, originator_ids: Sequence[UUID]) -> dict[UUID, StoredEvent]:
        """The version-1 stored event of each of these aggregates that exists."""

    def events_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        """All stored events of each of these aggregates, in version order: one query."""

    def indexed_events(self, topic: str) -> list[StoredEvent]:
        """Every stored event of one of the INDEXED_TOPICS, in log order: read through an
        index of their own, so in time with their number, not the size of the log."""

    def max_notification_id(self) -> int | None:
        """The log position of the newest stored event."""
