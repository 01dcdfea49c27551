"""The contract aggregate: terms over time, milestones reached, and what has been billed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.billed import BilledState
from domain.calendar import local_date, local_midnight
from domain.terms import (
    BillingFrequency,
    Component,
    ContractTerms,
    MilestoneComponent,
    TermsVersion,
    UsageComponent,
    component_from_record,
    component_to_record,
)
from domain.usage import BILLCYCLE_NS


class ContractRuleViolation(ValueError):
    """A contract message that is well-formed but cannot apply to this contract."""


def contract_aggregate_id(contract_id: str) -> UUID:
    return uuid5(BILLCYCLE_NS, f"contract:{contract_id}")


class Contract(Aggregate):
    """A customer's contract. Its version number guards billing: two runs cannot both bill it."""

    # What changed since the contract was last invoiced, each from the day it reaches, in
    # words (an amendment, a termination, a rival's change, an assignment given or
    # withdrawn): a line priced again says why. A class default: snapshots taken before it was
    # kept load without it.
    changes: tuple[tuple[date, str], ...] = ()

    @staticmethod
    def create_id(contract_id: str) -> UUID:
        return contract_aggregate_id(contract_id)

    @classmethod
    def open(cls, terms: ContractTerms, message_id: str) -> Contract:
        return cls(
            contract_id=terms.contract_id,
            customer_id=terms.customer_id,
            currency=terms.currency,
            start_date=terms.start_date,
            end_date=terms.end_date,
            timezone=terms.timezone,
            billing_frequency=terms.billing_frequency.value,
            billing_anchor_date=terms.billing_anchor_date,
            payment_terms_days=terms.payment_terms_days,
            usage_threshold_amount=terms.usage_threshold_amount,
            components=[component_to_record(c) for c in terms.components],
            extra=terms.extra,
            message_id=message_id,
        )

    @event("Created")
    def __init__(
        self,
        contract_id: str,
        customer_id: str,
        currency: str,
        start_date: date,
        end_date: date | None,
        timezone: str,
        billing_frequency: str,
        billing_anchor_date: date,
        payment_terms_days: int,
        usage_threshold_amount: Decimal | None,
        components: list[dict[str, Any]],
        extra: dict[str, Any],
        message_id: str,
    ) -> None:
        self.contract_id = contract_id
        self.customer_id = customer_id
        self.currency = currency
        self.start_date = start_date
        self.end_date = end_date
        self.timezone = timezone
        self.frequency = BillingFrequency(billing_frequency)
        self.anchor = billing_anchor_date
        self.extra = extra
        self.versions: list[TermsVersion] = [
            TermsVersion(
                effective_date=start_date,
                components=tuple(component_from_record(c) for c in components),
                usage_threshold_amount=usage_threshold_amount,
                payment_terms_days=payment_terms_days,
            )
        ]
        self.milestones: dict[str, date] = {}
        self.billed = BilledState()
        self.invoice_ids: list[UUID] = []
        self.last_invoice: tuple[str, str] | None = None  # (number, batch id)

    # --- commands ---------------------------------------------------------------------------

    def amend(
        self,
        effective_date: date,
        components: tuple[Component, ...],
        usage_threshold_amount: Decimal | None,
        payment_terms_days: int | None,
        message_id: str,
        sets_usage_threshold: bool = False,
    ) -> None:
        """New components from `effective_date`; threshold and terms unchanged unless given."""
        if effective_date < self.start_date:
            raise ContractRuleViolation(
                f"contract {self.contract_id}: amendment effective {effective_date} is before "
                f"the contract start {self.start_date}; amend from {self.start_date} or later"
            )
        if self.end_date is not None and effective_date >= self.end_date:
            raise ContractRuleViolation(
                f"contract {self.contract_id}: amendment effective {effective_date} is on or "
                f"after the end date {self.end_date}; service has ended by then"
            )
        current = self.terms_on(effective_date)
        self._amended(
            effective_date=effective_date,
            components=[component_to_record(c) for c in components],
            usage_threshold_amount=(
                usage_threshold_amount
                if sets_usage_threshold or usage_threshold_amount is not None
                else current.usage_threshold_amount
            ),
            payment_terms_days=(
                payment_terms_days if payment_terms_days is not None
                else current.payment_terms_days
            ),
            message_id=message_id,
        )

    @event("Amended")
    def _amended(
        self,
        effective_date: date,
        components: list[dict[str, Any]],
        usage_threshold_amount: Decimal | None,
        payment_terms_days: int,
        message_id: str,
    ) -> None:
        version = TermsVersion(
            effective_date=effective_date,
            components=tuple(component_from_record(c) for c in components),
            usage_threshold_amount=usage_threshold_amount,
            payment_terms_days=payment_terms_days,
        )
        # Later-received terms for the same date replace earlier ones; order by date.
        kept = [v for v in self.versions if v.effective_date != effective_date]
        self.versions = sorted([*kept, version], key=lambda v: v.effective_date)
        self._changed(effective_date, f"terms amended from {effective_date.isoformat()}")

    def terminate(self, end_date: date, message_id: str) -> None:
        if end_date < self.start_date:
            raise ContractRuleViolation(
                f"contract {self.contract_id}: end_date {end_date} is before the start "
                f"{self.start_date}; use the start date to end it before any service"
            )
        self._terminated(end_date=end_date, message_id=message_id)

    @event("Terminated")
    def _terminated(self, end_date: date, message_id: str) -> None:
        ended = self.end_date
        self.end_date = end_date
        # Service changes from the earlier of the two ends (a later one extends it).
        self._changed(end_date if ended is None else min(ended, end_date),
                      f"service ended on {end_date.isoformat()}" if ended is None else
                      f"end date moved from {ended.isoformat()} to {end_date.isoformat()}")

    def assignment_changed(self, metric: str, start: datetime, contract_id: str | None,
                           reason: str) -> None:
        """An operator assigned the customer's untagged usage of `metric` from `start` on to
        `contract_id` (None: to nobody, withdrawn), where this contract may have billed it or
        may now bill it: its invoiced periods from that day on are priced again, so a wrong
        assignment found after billing is credited here and billed there."""
        self._assignment_changed(metric=metric, start=start, contract_id=contract_id,
                                 reason=reason)

    @event("AssignmentChanged")
    def _assignment_changed(self, metric: str, start: datetime, contract_id: str | None,
                            reason: str) -> None:
        given = (f"assigned to {contract_id} ({reason})" if contract_id is not None
                 else "withdrawn from its assignment")
        self._changed(local_date(start, self.timezone), f"untagged {metric} usage from "
                      f"{start.astimezone(UTC):%Y-%m-%d %H:%M} UTC {given}")

    def rival_changed(self, contract_id: str, since: datetime) -> None:
        """Another contract of the customer pricing a metric of this one was amended or
        terminated, what it prices changing from `since`: untagged usage of then may now be
        this contract's alone, or no longer, so invoiced periods from that day on are priced
        again."""
        self._rival_changed(contract_id=contract_id, since=since)

    @event("RivalChanged")
    def _rival_changed(self, contract_id: str, since: datetime) -> None:
        self._changed(local_date(since, self.timezone),
                      f"contract {contract_id}, pricing its usage too, changed from "
                      f"{since.astimezone(UTC):%Y-%m-%d %H:%M} UTC")

    def _changed(self, day: date, why: str) -> None:
        if self.invoice_ids:  # before the first invoice, every period is priced anyway
            self.changes = (*self.changes, (day, why))

    @property
    def changed_from(self) -> date | None:
        """The earliest day whose terms, service or untagged usage changed since the contract
        was last invoiced (an amendment's effective date; its own termination's end date; a
        rival's amendment or termination; the start of a window of untagged usage given to or
        taken from it): billing prices the usage of invoiced periods ending on or after it
        again."""
        return min((day for day, _ in self.changes), default=None)

    def service(self) -> tuple[datetime, datetime | None]:
        """The service as instants: from local midnight of the start date to local midnight of
        the end date (None: no end), where periods begin and the last one ends."""
        ends = self.end_date
        return (local_midnight(self.start_date, self.timezone),
                None if ends is None else local_midnight(ends, self.timezone))

    def invoiced_usage_within(self, metric: str, start: datetime, end: datetime) -> bool:
        """Whether an invoice billed usage of `metric` (or of a metric not recorded, in older
        settlements) for some of [start, end)."""
        return any(
            u.metric in (metric, "")
            and local_midnight(period_start, self.timezone) < end
            and local_midnight(u.through, self.timezone) > start
            for (_, period_start), u in self.billed.usage.items())

    def usage_metrics(self) -> frozenset[str]:
        """The metrics some version of the terms prices usage of."""
        return frozenset().union(*(v.usage_metrics for v in self.versions))

    def complete_milestone(self, milestone: str, completed_on: date, message_id: str) -> None:
        if self.milestone_component(milestone) is None:
            known = sorted({
                c.milestone for v in self.versions for c in v.components
                if isinstance(c, MilestoneComponent)
            })
            raise ContractRuleViolation(
                f"contract {self.contract_id} has no milestone {milestone!r}"
                f" (its milestones: {', '.join(known) or 'none'}); check the milestone name"
            )
        already = self.milestones.get(milestone)
        if already is not None and already != completed_on:
            raise ContractRuleViolation(
                f"contract {self.contract_id}: milestone {milestone!r} was already completed on "
                f"{already}; a milestone completes once"
            )
        if already is None:
            self._milestone_completed(
                milestone=milestone, completed_on=completed_on, message_id=message_id
            )

    @event("MilestoneCompleted")
    def _milestone_completed(self, milestone: str, completed_on: date, message_id: str) -> None:
        self.milestones[milestone] = completed_on

    def record_invoice(
        self, invoice_id: UUID, number: str, batch_id: str, settlement: BilledState
    ) -> None:
        """The billing run issued an invoice: what it billed is now settled."""
        # The event stores the settlement's record. Parsing that record straight back into
        # the state we already hold cost more than building it, so the mutator takes the
        # state itself when the event is triggered here; replays parse the record.
        # trigger_event is what the decorated `_invoiced` calls, without the decorator's
        # per-call argument coercion and filtering (same event class, same fields).
        self._settling = settlement
        try:
            self.trigger_event(
                self.Invoiced,  # type: ignore[attr-defined]
                invoice_id=invoice_id, number=number, batch_id=batch_id,
                settlement=settlement.to_record(),
            )
        finally:
            self.__dict__.pop("_settling", None)

    @event("Invoiced")
    def _invoiced(
        self, invoice_id: UUID, number: str, batch_id: str, settlement: dict[str, Any]
    ) -> None:
        local: BilledState | None = self.__dict__.pop("_settling", None)
        settled = (local if local is not None
                   else BilledState.from_record(settlement, metric_of=self._usage_metric_of))
        latest = self.billed.cycle_date
        self.billed.apply(settled)
        self.invoice_ids.append(invoice_id)
        self.last_invoice = (number, batch_id)
        if latest is None or settled.cycle_date is None or settled.cycle_date >= latest:
            # The invoice priced every invoiced period the change reached; one for an
            # earlier cycle date than already billed did not reach the periods after it.
            self.changes = ()

    # --- queries ----------------------------------------------------------------------------

    def terms_on(self, day: date) -> TermsVersion:
        """The terms in effect on `day` (the first terms before the contract starts)."""
        current = self.versions[0]
        for version in self.versions[1:]:
            if version.effective_date > day:
                break
            current = version
        return current

    def _usage_metric_of(self, component_id: str) -> str:
        """The metric the latest terms naming a usage component `component_id` price ("" if
        none do): for settlements stored before usage entries kept their metric."""
        for version in reversed(self.versions):
            for c in version.components:
                if isinstance(c, UsageComponent) and c.id == component_id:
                    return c.metric
        return ""

    def milestone_component(self, milestone: str) -> MilestoneComponent | None:
        completed_on = self.milestones.get(milestone)
        versions = [self.terms_on(completed_on)] if completed_on else []
        for version in [*versions, *reversed(self.versions)]:
            for c in version.components:
                if isinstance(c, MilestoneComponent) and c.milestone == milestone:
                    return c
        return None


def retroactive_change_note(contract: Contract, change: str, day: date) -> str | None:
    """Said on ingest when a change reaches periods already invoiced: the operator learns
    that the contract's next invoice carries credits and charges for them."""
    billed = contract.billed
    ends = [u.through for u in billed.usage.values()]
    ends += [s.end for segments in billed.subscriptions.values() for s in segments]
    if not any(end > day for end in ends):
        return None
    return (f"contract {contract.contract_id} {change} {day.isoformat()}, within periods "
            "already invoiced: its next invoice credits and charges the difference for them")


def later_end_note(contract: Contract, ended: date | None) -> str | None:
    """Said on ingest when a termination moves a set end date later: it extends service."""
    if ended is None or contract.end_date is None or contract.end_date <= ended:
        return None
    return (f"contract {contract.contract_id}: the termination moves its end from "
            f"{ended.isoformat()} to {contract.end_date.isoformat()}, later: service is "
            "extended and billed to the new end; check the end date")


def counted_properties(events: Iterable[object]) -> set[str]:
    """The usage properties whose distinct values these events' contract terms count
    (components with aggregation unique_count): the store keeps distinct values only of
    properties some contract counts, and must know of a new one when its contract is saved."""
    counted: set[str] = set()
    for e in events:
        if isinstance(e, Contract.Created | Contract.Amended):  # type: ignore[attr-defined]
            components: list[dict[str, Any]] = cast(Any, e).components
            for component in components:
                if component.get("unique_property"):
                    counted.add(component["unique_property"])
    return counted
