"""The billing rules: what a contract owes on a cycle date, reconciled against what it was billed.

`bill_contract` is pure: it reads the contract aggregate, usage through a `UsageReader`, and the
cycle date, and returns the invoice lines due with the settlement that records them, a hold
with its reasons, or the next date anything falls due. Every amount is rounded once, by
`domain.money.round_money`, as the line is made. The rules by kind of line: subscriptions in
`domain/subscription_billing.py`, usage in `domain/usage_billing.py`, milestones here; the
invoice being drafted and what billing reads in `domain/invoice_draft.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from functools import partial

from domain.billed import BilledState
from domain.calendar import period_containing
from domain.contract import Contract
from domain.invoice_draft import (
    ONE_DAY,
    BillingContext,
    InvoiceDraft,
    UsageNotBillable,
    UsageReader,
    service_window,
)
from domain.invoice_lines import InvoiceLine, LineKind
from domain.money import ZERO
from domain.subscription_billing import bill_subscriptions
from domain.usage_billing import bill_usage, uncounted_note, usage_quantity, usage_windows

__all__ = [  # what the rest of the domain imports from here
    "BillingContext", "BillingOutcome", "Held", "InvoiceDue", "NothingDue", "UsageNotBillable",
    "UsageReader", "bill_contract", "next_due_date", "plan_usage_reads", "service_window",
    "usage_quantity", "usage_windows",
]


@dataclass(frozen=True)
class InvoiceDue:
    lines: tuple[InvoiceLine, ...]
    settlement: BilledState
    issue_date: date
    due_date: date
    uncounted_usage: str | None = None  # usage_billing.uncounted_note, on each outcome

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)


@dataclass(frozen=True)
class Held:
    reasons: tuple[str, ...]
    uncounted_usage: str | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class NothingDue:
    next_due: date | None
    uncounted_usage: str | None = None


BillingOutcome = InvoiceDue | Held | NothingDue

_KIND_ORDER = {kind: i for i, kind in enumerate(LineKind)}


def bill_contract(contract: Contract, ctx: BillingContext, usage: UsageReader) -> BillingOutcome:
    """Everything due from `contract` by `ctx.cycle_date` and not yet billed."""
    draft = InvoiceDraft(contract, ctx)
    bill_subscriptions(draft)
    bill_usage(draft, usage)
    _bill_milestones(draft)
    uncounted = uncounted_note(contract.customer_id, draft.uncounted)
    if draft.holds:
        return Held(tuple(draft.holds), uncounted)
    if not draft.lines:
        return NothingDue(next_due_date(contract, ctx.cycle_date), uncounted)
    draft.settlement.usage_revision = ctx.log_position
    draft.settlement.cycle_date = ctx.cycle_date
    terms = contract.terms_on(ctx.cycle_date)
    lines = sorted(
        draft.lines, key=lambda ln: (_KIND_ORDER[ln.kind], ln.period_start, ln.component_id)
    )
    return InvoiceDue(
        lines=tuple(lines),
        settlement=draft.settlement,
        issue_date=ctx.cycle_date,
        due_date=ctx.cycle_date + timedelta(days=terms.payment_terms_days),
        uncounted_usage=uncounted,
    )


def plan_usage_reads(contract: Contract, ctx: BillingContext, usage: UsageReader) -> None:
    """Ask `usage` for every read `bill_contract` would make, and nothing else.

    Only the usage rules read meters, and which meters they read does not depend on the
    subscriptions or milestones, so a run can plan a chunk's reads without billing it twice.
    """
    bill_usage(InvoiceDraft(contract, ctx, planning=True), usage)


# --- milestones -------------------------------------------------------------------------------


def _bill_milestones(draft: InvoiceDraft) -> None:
    contract = draft.contract
    for milestone, completed_on in sorted(contract.milestones.items(), key=lambda kv: kv[1]):
        component = contract.milestone_component(milestone)
        if component is None or completed_on > draft.ctx.cycle_date:
            continue
        if component.id in contract.billed.milestones:
            continue
        amount = draft.money(component.amount, of=partial(_milestone_priced, component.id,
                                                          milestone))
        draft.lines.append(InvoiceLine(
            component_id=component.id,
            kind=LineKind.MILESTONE,
            description=f"{component.id}: milestone {milestone} completed {completed_on}",
            quantity=Decimal(1),
            unit_amount=component.amount,
            amount=amount,
            period_start=completed_on,
            period_end=completed_on + ONE_DAY,
            basis={"milestone": milestone, "completed_on": completed_on.isoformat(),
                   "terms_effective": contract.terms_on(completed_on).effective_date.isoformat()},
        ))
        draft.settlement.milestones[component.id] = amount


# --- when next -------------------------------------------------------------------------------


def _milestone_priced(component_id: str, milestone: str) -> str:
    """What a milestone amount prices, as a failure to price it names it."""
    return f"{component_id}: milestone {milestone}"


def next_due_date(contract: Contract, cycle_date: date) -> date | None:
    """The first date after `cycle_date` on which a run would find something due, as the
    contract stands: billed for a later cycle date (a retry after a later batch), nothing is
    due until after that date (QA: a retry said the period end its later batch had billed)."""
    if contract.end_date is not None and contract.end_date <= contract.start_date:
        return None
    billed = contract.billed.cycle_date
    if billed is not None and billed > cycle_date:
        cycle_date = billed
    candidates: list[date] = []
    if contract.start_date > cycle_date:
        candidates.append(contract.start_date)
    current = period_containing(contract.anchor, contract.frequency, cycle_date)
    window = service_window(contract, current)
    if window is not None and window.end > cycle_date:
        candidates.append(window.end)
    candidates.extend(
        v.effective_date for v in contract.versions if v.effective_date > cycle_date
    )
    if contract.end_date is not None and contract.end_date > cycle_date:
        candidates.append(contract.end_date)
    candidates.extend(d for d in contract.milestones.values() if d > cycle_date)
    return min(candidates) if candidates else None

