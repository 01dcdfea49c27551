"""An invoice being drafted for one contract on a cycle date, and what billing reads to draft it:
the run's context (cycle date, watermarks) and usage through a `UsageReader`. The rules that
add its lines are in subscription_billing, usage_billing and billing (milestones)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from domain.billed import BilledState
from domain.calendar import ServicePeriod
from domain.contract import Contract
from domain.invoice_lines import InvoiceLine
from domain.money import AmountOutOfRange, round_money
from domain.terms import UsageComponent
from domain.usage import MeterReading
from domain.usage_assignments import AssignedUsage

ONE_DAY = timedelta(days=1)


class UsageNotBillable(Exception):
    """Usage that cannot be attributed to this contract yet (e.g. ambiguous untagged usage)."""


class UsageReader(Protocol):
    """Usage of one contract's customer, already narrowed to the usage this contract prices."""

    def read(self, component: UsageComponent, start: datetime, end: datetime) -> MeterReading:
        """The meter of the component's metric over [start, end)."""

    def changed_since(self, metric: str, revision: int, before: datetime) -> list[datetime]:
        """Bucket starts before `before` whose usage changed after log position `revision`."""


@dataclass(frozen=True)
class BillingContext:
    cycle_date: date
    watermarks: Mapping[str, datetime]  # metric -> usage complete before this instant
    log_position: int  # the log position at the start of the billing run
    # (customer, metric) -> the first meter bucket the run's notes on unbilled usage read, the
    # usage before acknowledged (domain/acknowledgements.py); billing itself never reads it.
    notes_from: Mapping[tuple[str, str], datetime] = field(default_factory=dict)
    # Untagged usage the operator assigned to a contract (domain/usage_assignments.py): read
    # by the run's meter reads, never by billing itself.
    assigned_usage: AssignedUsage = field(default_factory=dict)
    # metric -> active source -> its watermark, for the hold reasons to name the sources
    # behind; empty for a batch begun before runs recorded them (its reasons said no source).
    watermark_sources: Mapping[str, Mapping[str, datetime]] = field(default_factory=dict)
    # metric -> retired source -> its watermark; None for a batch begun before sources could
    # be retired (its reasons named no retirement, nor the command for one).
    retired_sources: Mapping[str, Mapping[str, datetime]] | None = None


@dataclass
class InvoiceDraft:
    """The lines due so far, the settlement recording them, and why the invoice is held."""

    contract: Contract
    ctx: BillingContext
    lines: list[InvoiceLine] = field(default_factory=list)
    settlement: BilledState = field(default_factory=BilledState)
    holds: list[str] = field(default_factory=list)
    planning: bool = False  # only noting the meter reads: nothing is priced
    # Per usage period billed, its events whose unique_count property holds a value it does
    # not count (usage_billing.uncounted_note says them).
    uncounted: list[str] = field(default_factory=list)

    def money(self, amount: Decimal, of: Callable[[], str]) -> Decimal:
        """The amount rounded; `of()` says what it prices (a component, its metric, period and
        quantity), for the run's failure reason where the amount is out of range: called only
        then, since every line of a run is priced through here."""
        try:
            return round_money(amount, self.contract.currency)
        except AmountOutOfRange as exc:
            raise AmountOutOfRange(f"{of()}: {exc}") from None


def service_window(contract: Contract, period: ServicePeriod) -> ServicePeriod | None:
    """The days of `period` the contract serves: cut by start_date and end_date."""
    end = period.end if contract.end_date is None else min(period.end, contract.end_date)
    start = max(period.start, contract.start_date)
    return ServicePeriod(start, end) if start < end else None


