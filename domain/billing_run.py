"""The billing run (batch): its input manifest and every contract's outcome, with reasons."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.usage import BILLCYCLE_NS


class Outcome(StrEnum):
    INVOICED = "invoiced"
    HELD = "held"
    FAILED = "failed"
    NOT_DUE = "not_due"


# The notes a contract's outcome may carry on its customer's unbilled usage, in the order a
# run warns of them and `batch show` lists them: the rules of unbilled_usage.py write the
# first four, billing itself the last (usage_billing.uncounted_note).
USAGE_NOTES = ("unpriced_usage", "usage_outside_service", "usage_in_unbilled_windows",
               "misattributed_usage", "uncounted_usage")


@dataclass(frozen=True)
class ContractOutcome:
    contract_id: str
    outcome: Outcome
    reason: str | None = None
    invoice_id: str | None = None
    number: str | None = None
    total: str | None = None
    currency: str | None = None
    next_due: str | None = None
    # Usage of the contract's customer that no contract of theirs bills (unbilled_usage.py):
    # of a metric none prices, outside the service of those that price it, in periods between
    # them that none bills it for, or sent with a contract_id naming no contract that prices
    # it (USAGE_NOTES).
    unpriced_usage: str | None = None
    usage_outside_service: str | None = None
    usage_in_unbilled_windows: str | None = None
    misattributed_usage: str | None = None
    # Usage of the periods billed whose unique_count property holds a value it does not count
    # (a decimal, null, array or object), which counts nobody.
    uncounted_usage: str | None = None
    # The log position through which the run had read when it decided the contract: what it
    # read was logged at or before it (`batch verify` bills it again as of then, too, where
    # the contract changed while the batch ran). None in batches run before it was recorded.
    decided_through: int | None = None

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None} | {
            "outcome": self.outcome.value
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> ContractOutcome:
        return cls(**{**r, "outcome": Outcome(r["outcome"])})


def billing_run_id(batch_id: str) -> UUID:
    return uuid5(BILLCYCLE_NS, f"billing-run:{batch_id}")


class BatchConflict(ValueError):
    """A batch id reused for a different cycle date."""


class BillingRun(Aggregate):
    """One batch: what it saw when it started, and what it did with each contract."""

    @staticmethod
    def create_id(batch_id: str) -> UUID:
        return billing_run_id(batch_id)

    @event("Started")
    def __init__(
        self, batch_id: str, cycle_date: date, started_at: datetime, manifest: dict[str, Any]
    ) -> None:
        self.batch_id = batch_id
        self.cycle_date = cycle_date
        self.started_at = started_at
        self.manifest = manifest
        self.outcomes: dict[str, ContractOutcome] = {}
        self.attempts: list[dict[str, Any]] = [
            {"kind": "run", "started_at": started_at.isoformat(), "manifest": manifest}
        ]
        self.finished_at: datetime | None = None

    def check_cycle_date(self, cycle_date: date) -> None:
        if cycle_date != self.cycle_date:
            raise BatchConflict(
                f"batch {self.batch_id} already exists for cycle date {self.cycle_date}; "
                f"choose another --batch-id for {cycle_date}"
            )

    @event("Resumed")
    def resume(self, kind: str, started_at: datetime, manifest: dict[str, Any]) -> None:
        """Another attempt at this batch: a run resumed after a crash, or a retry."""
        self.attempts.append(
            {"kind": kind, "started_at": started_at.isoformat(), "manifest": manifest}
        )
        self.finished_at = None

    def record_outcomes(self, outcomes: list[ContractOutcome], attempt: int) -> None:
        """Record what the attempt at index `attempt` of `attempts` did with these contracts."""
        # As Contract.record_invoice: the event stores records, and the mutator takes the
        # outcomes we hold when triggered here rather than parsing them back (replays parse).
        self._recording = outcomes
        try:
            self._outcomes_recorded(outcomes=[o.to_record() for o in outcomes], attempt=attempt)
        finally:
            self.__dict__.pop("_recording", None)

    # `attempt` ties the outcomes to the attempt that decided them: two processes on one batch
    # id both record after both attempts began, so the latest attempt is not always theirs
    # (`batch verify` bills each outcome again as of its own attempt's start). None in events
    # stored before it was recorded.
    @event("OutcomesRecorded")
    def _outcomes_recorded(self, outcomes: list[dict[str, Any]],
                           attempt: int | None = None) -> None:
        local: list[ContractOutcome] | None = self.__dict__.pop("_recording", None)
        for outcome in local if local is not None else map(ContractOutcome.from_record, outcomes):
            if replaces(outcome, self.outcomes.get(outcome.contract_id)):
                self.outcomes[outcome.contract_id] = outcome

    @event("Finished")
    def finish(self, finished_at: datetime, counts: dict[str, int]) -> None:
        self.finished_at = finished_at
        self.attempts[-1]["finished_at"] = finished_at.isoformat()
        self.attempts[-1]["counts"] = counts

    def counts(self) -> dict[str, int]:
        counts = {o.value: 0 for o in Outcome}
        for outcome in self.outcomes.values():
            counts[outcome.outcome.value] += 1
        return {"contracts": len(self.outcomes), **counts}

    def retryable(self) -> list[str]:
        return sorted(
            cid for cid, o in self.outcomes.items() if o.outcome in (Outcome.HELD, Outcome.FAILED)
        )


def replaces(outcome: ContractOutcome, kept: ContractOutcome | None) -> bool:
    """Whether a contract's outcome, recorded after `kept`, takes its place. Nothing due never
    replaces an invoice: two processes on one batch id at once, the one finding a contract
    billed by the other records nothing due for it, but the batch did invoice it."""
    return (kept is None or kept.outcome is not Outcome.INVOICED
            or outcome.outcome is not Outcome.NOT_DUE)
