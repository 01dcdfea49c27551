"""Untagged usage an operator has assigned to one of a customer's contracts.

Where a customer has two active contracts pricing the same metric, usage sent without
`contract_id` cannot be billed by either: runs hold both invoices rather than guess
(domain/meter_reads.py). The usage stays in the log as sent, and sending it again with the tag
is a conflicting duplicate, so without a way to say whose it is the invoices would be held for
good. An assignment says it: the customer's untagged usage of the metric in [start, end) is
the named contract's. Runs then bill it there and leave it out of the other contracts (one
period may be shared between contracts, each billing its own windows); untagged usage of a
time when both are active and neither is assigned it still holds them. Given to another
contract, or withdrawn, after billing, the contracts it reaches price those periods again
(`Contract.assignment_changed`). Each run records the assignments in force in its manifest,
so `batch verify` decides again with the same ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.contract import Contract
from domain.usage import BILLCYCLE_NS, bucket_start

ASSIGNMENTS_ID = uuid5(BILLCYCLE_NS, "usage-assignments")


class AssignmentRejected(ValueError):
    """An assignment that cannot be recorded, with what to give instead."""


@dataclass(frozen=True)
class UsageAssignment:
    customer_id: str
    metric: str
    start: datetime  # untagged usage in [start, end) is the contract's
    end: datetime
    contract_id: str
    reason: str
    by: str
    at: datetime  # when it was given

    def to_json(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "metric": self.metric,
                "start": self.start.isoformat(), "end": self.end.isoformat(),
                "contract_id": self.contract_id, "reason": self.reason, "by": self.by,
                "at": self.at.isoformat()}

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> UsageAssignment:
        instant = datetime.fromisoformat
        return cls(record["customer_id"], record["metric"], instant(record["start"]),
                   instant(record["end"]), record["contract_id"], record["reason"],
                   record["by"], instant(record["at"]))


@dataclass(frozen=True)
class AssignmentChange:
    """An assignment given or withdrawn, and the contracts whose invoices billed usage of its
    window: each prices those periods again at its next run (credited where the usage was,
    billed where it goes)."""

    assignment: UsageAssignment
    repriced: tuple[str, ...]


def _utc(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


AssignedUsage = Mapping[tuple[str, str], tuple[UsageAssignment, ...]]  # (customer, metric)


class UsageAssignments(Aggregate):
    """Every assignment given. Windows of one customer and metric do not overlap; giving the
    same window again replaces its assignment, and one can be withdrawn (corrections)."""

    @staticmethod
    def create_id() -> UUID:
        return ASSIGNMENTS_ID

    @event("Opened")
    def __init__(self) -> None:
        # (customer, metric) -> start -> fields
        self.given: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}

    def assign(self, contract: Contract, metric: str, start: datetime, end: datetime,
               reason: str, by: str, at: datetime) -> UsageAssignment:
        """Assign the untagged usage of `contract`'s customer in [start, end) to it."""
        customer = contract.customer_id
        if metric not in contract.usage_metrics():
            priced = ", ".join(sorted(contract.usage_metrics())) or "none"
            raise AssignmentRejected(
                f"contract {contract.contract_id} prices no usage of {metric} (its metrics: "
                f"{priced}); assign the usage to a contract that prices it")
        if not reason.strip():
            raise AssignmentRejected(
                "give the reason the usage is this contract's (e.g. 'sandbox project of "
                "ct_a per the account manager')")
        for name, instant in (("start", start), ("end", end)):
            if instant.tzinfo is None:
                raise AssignmentRejected(f"{name} {instant.isoformat()} has no offset; give "
                                         "one such as 2026-10-01T00:00:00Z, or a date")
            if bucket_start(instant) != instant:
                raise AssignmentRejected(
                    f"{name} {instant.isoformat()} is inside a 15-minute meter bucket; usage "
                    "is metered per quarter hour (UTC): give an instant on one, such as "
                    f"{bucket_start(instant).astimezone(UTC).isoformat()}")
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if not start < end:
            raise AssignmentRejected(f"the window's start {_utc(start)} is not before its end "
                                     f"{_utc(end)}; give a start before the end")
        for other in self.of(customer, metric):
            same_window = (other.start, other.end) == (start, end)
            if other.start < end and start < other.end and not same_window:
                raise AssignmentRejected(
                    f"untagged {metric} of {customer} from {other.start.isoformat()} to "
                    f"{other.end.isoformat()} is already assigned to {other.contract_id}, and "
                    f"the window asked, {start.isoformat()} to {end.isoformat()} (dates are "
                    f"local midnights of {contract.contract_id}), overlaps it; windows may not "
                    "overlap: assign the rest around it, or give that same window again to "
                    f"replace its assignment: --from {_utc(other.start)} --to {_utc(other.end)}")
        self._assigned(customer_id=customer, metric=metric, start=start, end=end,
                       contract_id=contract.contract_id, reason=reason.strip(),
                       by=by.strip() or "unknown", at=at)
        return UsageAssignment(customer, metric, start, end, contract.contract_id,
                               reason.strip(), by.strip() or "unknown", at)

    @event("Assigned")
    def _assigned(self, customer_id: str, metric: str, start: datetime, end: datetime,
                  contract_id: str, reason: str, by: str, at: datetime) -> None:
        self.given.setdefault(customer_id, {}).setdefault(metric, {})[start.isoformat()] = {
            "end": end, "contract_id": contract_id, "reason": reason, "by": by, "at": at}

    def withdraw(self, customer_id: str, metric: str, start: datetime,
                 contract_id: str | None = None) -> UsageAssignment:
        """Take back the assignment of the window starting at `start` (and given to
        `contract_id`, where named): its untagged usage holds the invoices again until
        assigned anew."""
        found = next((a for a in self.of(customer_id, metric) if a.start == start
                      and contract_id in (None, a.contract_id)), None)
        if found is None:
            given = ", ".join(f"{a.start.isoformat()} to {a.end.isoformat()} ({a.contract_id})"
                              for a in self.of(customer_id, metric)) or "none"
            to = "" if contract_id is None else f" given to {contract_id}"
            raise AssignmentRejected(
                f"no assignment of {customer_id}'s untagged {metric}{to} starts at "
                f"{start.astimezone(UTC).isoformat()} (its windows: {given}); "
                "`billcycle usage assigned` lists them")
        self._withdrawn(customer_id=customer_id, metric=metric, start=found.start)
        return found

    @event("Withdrawn")
    def _withdrawn(self, customer_id: str, metric: str, start: datetime) -> None:
        del self.given[customer_id][metric][start.isoformat()]

    def of(self, customer_id: str, metric: str) -> list[UsageAssignment]:
        windows = self.given.get(customer_id, {}).get(metric, {})
        return [UsageAssignment(customer_id, metric, datetime.fromisoformat(start), **fields)
                for start, fields in sorted(windows.items())]

    def in_force(self) -> list[UsageAssignment]:
        """Every assignment, by customer, metric and start."""
        return [a for customer in sorted(self.given) for metric in sorted(self.given[customer])
                for a in self.of(customer, metric)]


def assigned_usage(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str],
                                                                  tuple[UsageAssignment, ...]]:
    """Per customer and metric, the assignments a run recorded in its manifest."""
    found: dict[tuple[str, str], list[UsageAssignment]] = {}
    for record in records:
        a = UsageAssignment.from_json(record)
        found.setdefault((a.customer_id, a.metric), []).append(a)
    return {key: tuple(sorted(v, key=lambda a: a.start)) for key, v in found.items()}
