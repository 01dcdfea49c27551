"""Unbilled usage an operator has looked at and acknowledged as not to be billed.

Every billing run names usage that no contract bills (domain/unbilled_usage.py): usage after a
termination, in periods whose terms do not price it, sent with a contract_id that prices none
of it. Such usage stays in the meters for good, so without a way to say "seen, not billable"
every run would repeat the same warnings and a new one would drown among them. An
acknowledgement says it for one customer and metric, through an instant, with the reason and
who gave it: runs then leave that usage out of their notes (the meters' buckets before the
one holding that instant), and name only usage that comes after it. Nothing is deleted or
billed differently: billing never reads acknowledgements, and the log keeps each one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.usage import BILLCYCLE_NS, bucket_start

ACKNOWLEDGEMENTS_ID = uuid5(BILLCYCLE_NS, "usage-acknowledgements")


class AcknowledgementRejected(ValueError):
    """An acknowledgement that cannot be recorded, with what to give instead."""


@dataclass(frozen=True)
class Acknowledgement:
    customer_id: str
    metric: str
    through: datetime  # usage before this instant is acknowledged
    reason: str
    by: str
    at: datetime  # when it was given

    def to_json(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "metric": self.metric,
                "through": self.through.isoformat(), "reason": self.reason, "by": self.by,
                "at": self.at.isoformat()}


class UsageAcknowledgements(Aggregate):
    """Every acknowledgement given; the latest per customer and metric is in force."""

    @staticmethod
    def create_id() -> UUID:
        return ACKNOWLEDGEMENTS_ID

    @event("Opened")
    def __init__(self) -> None:
        self.given: dict[str, dict[str, dict[str, Any]]] = {}  # customer -> metric -> fields

    def acknowledge(self, customer_id: str, metric: str, through: datetime, reason: str,
                    by: str, at: datetime) -> Acknowledgement:
        if not customer_id.strip() or not metric.strip():
            raise AcknowledgementRejected("name the customer and the metric whose usage is "
                                          "acknowledged")
        if not reason.strip():
            raise AcknowledgementRejected(
                "give the reason the usage is not to be billed (e.g. 'integration left on "
                "after the API plan ended; not billable per the account manager')")
        if through.tzinfo is None:
            raise AcknowledgementRejected(f"through {through.isoformat()} has no offset; "
                                          "give one such as 2026-11-01T00:00:00Z")
        self._acknowledged(customer_id=customer_id, metric=metric,
                           through=through.astimezone(UTC), reason=reason.strip(),
                           by=by.strip() or "unknown", at=at)
        (given,) = (a for a in self.in_force([customer_id]) if a.metric == metric)
        return given

    @event("Acknowledged")
    def _acknowledged(self, customer_id: str, metric: str, through: datetime, reason: str,
                      by: str, at: datetime) -> None:
        self.given.setdefault(customer_id, {})[metric] = {
            "through": through, "reason": reason, "by": by, "at": at}

    def withdraw(self, customer_id: str, metric: str, reason: str, by: str,
                 at: datetime) -> Acknowledgement:
        """Take back the acknowledgement in force of the customer's usage of the metric (one
        given by mistake): runs name all of that usage again. The log keeps both."""
        found = next((a for a in self.in_force([customer_id]) if a.metric == metric), None)
        if found is None:
            given = ", ".join(a.metric for a in self.in_force([customer_id])) or "none"
            raise AcknowledgementRejected(
                f"no acknowledgement of {customer_id}'s {metric} is in force (the customer's: "
                f"{given}); `billcycle usage acknowledged` lists them")
        if not reason.strip():
            raise AcknowledgementRejected("give the reason the acknowledgement is taken back")
        self._withdrawn(customer_id=customer_id, metric=metric, reason=reason.strip(),
                        by=by.strip() or "unknown", at=at)
        return found

    @event("Withdrawn")
    def _withdrawn(self, customer_id: str, metric: str, reason: str, by: str,
                   at: datetime) -> None:
        del self.given[customer_id][metric]
        if not self.given[customer_id]:
            del self.given[customer_id]

    def in_force(self, customer_ids: Iterable[str] | None = None) -> list[Acknowledgement]:
        """The acknowledgements in force, of these customers (None: of all), in order."""
        customers = sorted(self.given if customer_ids is None else
                           {c for c in customer_ids if c in self.given})
        return [Acknowledgement(customer, metric, **self.given[customer][metric])
                for customer in customers for metric in sorted(self.given[customer])]


def notes_from(acknowledged: Iterable[dict[str, Any]]) -> dict[tuple[str, str], datetime]:
    """Per customer and metric, the first meter bucket a run's notes read, from the
    acknowledgements a run recorded in its manifest (`Acknowledgement.to_json`): the bucket
    holding `through`, which may hold usage from both sides of it: named, not silenced."""
    return {(a["customer_id"], a["metric"]): bucket_start(datetime.fromisoformat(a["through"]))
            for a in acknowledged}
