"""Builders for billing-rule tests: contracts from plain values and an in-memory usage meter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

from domain.billing import BillingContext, BillingOutcome, InvoiceDue, bill_contract
from domain.contract import Contract
from domain.terms import (
    Aggregation,
    BillingFrequency,
    BillingTiming,
    Component,
    ContractTerms,
    Graduated,
    MilestoneComponent,
    PerUnit,
    Pricing,
    SubscriptionComponent,
    Tier,
    UsageComponent,
)
from domain.usage import UNCOUNTED_MARK, MeterReading, bucket_start, property_values

D = Decimal


def subscription(
    amount: str, component_id: str = "platform", timing: str = "in_advance", quantity: str = "1"
) -> SubscriptionComponent:
    return SubscriptionComponent(component_id, D(amount), D(quantity), BillingTiming(timing))


def usage(
    metric: str = "api_calls",
    pricing: Pricing | None = None,
    component_id: str = "api",
    minimum: str | None = None,
    aggregation: str = "sum",
    unique_property: str | None = None,
) -> UsageComponent:
    return UsageComponent(
        component_id,
        metric,
        pricing or PerUnit(D("0.01")),
        Aggregation(aggregation),
        unique_property,
        None if minimum is None else D(minimum),
    )


def graduated(*tiers: tuple[str | None, str, str]) -> Graduated:
    return Graduated(tuple(Tier(None if u is None else D(u), D(a), D(f)) for u, a, f in tiers))


def milestone(name: str = "go_live", amount: str = "5000.00") -> MilestoneComponent:
    return MilestoneComponent("golive", name, D(amount))


def contract(
    *components: Component,
    start: date = date(2026, 10, 1),
    end: date | None = None,
    anchor: date | None = None,
    frequency: str = "monthly",
    currency: str = "USD",
    timezone: str = "UTC",
    threshold: str | None = None,
    terms_days: int = 30,
    contract_id: str = "ct_1",
    customer_id: str = "cus_1",
) -> Contract:
    terms = ContractTerms(
        contract_id=contract_id,
        customer_id=customer_id,
        currency=currency,
        start_date=start,
        timezone=timezone,
        billing_frequency=BillingFrequency(frequency),
        billing_anchor_date=anchor or start,
        payment_terms_days=terms_days,
        components=components,
        end_date=end,
        usage_threshold_amount=None if threshold is None else D(threshold),
    )
    return Contract.open(terms, message_id=f"m-{contract_id}")


@dataclass
class FakeUsage:
    """An in-memory meter: events are (occurred_at, quantity, properties); an event's id is
    "e-" and its position."""

    events: list[tuple[datetime, Decimal, dict[str, Any]]] = field(default_factory=list)
    revisions: list[int] = field(default_factory=list)
    position: int = 0
    metrics: list[str | None] = field(default_factory=list)  # None: any metric's

    def add(self, when: datetime, quantity: str, **properties: Any) -> None:
        self.add_of(None, when, quantity, **properties)

    def add_of(self, metric: str | None, when: datetime, quantity: str, **properties: Any
               ) -> None:
        """Usage of one metric only (`add`: usage every component's metric reads)."""
        self.position += 1
        self.events.append((when, D(quantity), properties))
        self.revisions.append(self.position)
        self.metrics.append(metric)

    def _of(self, metric: str) -> list[tuple[tuple[datetime, Decimal, dict[str, Any]], int]]:
        return [(e, r) for e, r, m in zip(self.events, self.revisions, self.metrics, strict=True)
                if m is None or m == metric]

    def read(self, component: UsageComponent, start: datetime, end: datetime) -> MeterReading:
        inside = [(e, r) for e, r in self._of(component.metric) if start <= e[0] < end]
        if not inside:
            return MeterReading()
        quantities = [e[1] for e, _ in inside]
        latest = max(inside, key=lambda er: er[0][0])[0]
        # Kept as the stores keep them: a value unique_count does not count as its mark.
        uniques = {value for e, r in inside for name, value in property_values(e[2], f"e-{r}")
                   if name == component.unique_property}
        marks = {value for value in uniques if value.startswith(UNCOUNTED_MARK)}
        return MeterReading(
            quantity_sum=sum(quantities, D(0)),
            event_count=len(inside),
            quantity_max=max(quantities),
            latest_quantity=latest[1],
            unique_count=len(uniques - marks),
            revision=max(r for _, r in inside),
            uncounted=len(marks),
            uncounted_first=min(marks, default=None),
        )

    def changed_since(self, metric: str, revision: int, before: datetime) -> list[datetime]:
        return sorted({
            bucket_start(e[0]) for e, r in self._of(metric) if r > revision and e[0] < before
        })


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def run(
    c: Contract,
    cycle_date: date,
    meter: FakeUsage | None = None,
    watermarks: dict[str, datetime] | None = None,
) -> BillingOutcome:
    meter = meter or FakeUsage()
    ctx = BillingContext(cycle_date, watermarks or {}, meter.position)
    return bill_contract(c, ctx, meter)


def bill(
    c: Contract,
    cycle_date: date,
    meter: FakeUsage | None = None,
    watermarks: dict[str, datetime] | None = None,
) -> InvoiceDue:
    """Bill and record the invoice on the contract, as a billing run would."""
    outcome = run(c, cycle_date, meter, watermarks)
    assert isinstance(outcome, InvoiceDue), outcome
    c.record_invoice(
        invoice_id=c.id, number="INV-TEST", batch_id="B-TEST",
        settlement=outcome.settlement,
    )
    return outcome


def amounts(due: InvoiceDue) -> list[tuple[str, str, str]]:
    return [(line.kind.value, line.component_id, str(line.amount)) for line in due.lines]


def bill_if_due(
    c: Contract, cycle_date: date, issued: list[InvoiceDue], meter: FakeUsage | None = None
) -> None:
    """A run in a generated history: bill and record the invoice when anything is due."""
    outcome = run(c, cycle_date, meter)
    if isinstance(outcome, InvoiceDue):
        c.record_invoice(invoice_id=c.id, number="INV-TEST", batch_id="B-TEST",
                         settlement=outcome.settlement)
        issued.append(outcome)


def billed_by_period(issued: list[InvoiceDue]) -> dict[date, Decimal]:
    """What the invoices' lines add up to, per the period (start) they bill."""
    billed: dict[date, Decimal] = {}
    for due in issued:
        for line in due.lines:
            billed[line.period_start] = billed.get(line.period_start, D(0)) + line.amount
    return billed


def months(first: date, count: int) -> list[tuple[date, date]]:
    """`count` calendar months from the month of `first`: (start, end) each."""
    starts = [date(first.year + (first.month - 1 + k) // 12, (first.month - 1 + k) % 12 + 1, 1)
              for k in range(count + 1)]
    return list(pairwise(starts))
