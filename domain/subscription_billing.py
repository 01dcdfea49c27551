"""Subscriptions: what each period of a subscription component owes, by the terms day by day,
against what was billed for it; the difference charged or credited where it is due
(contract.md: periods, proration, amendments, termination)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from itertools import pairwise

from domain.billed import PeriodKey, Segment
from domain.calendar import (
    ServicePeriod,
    period_containing,
    periods_overlapping,
    prorate,
)
from domain.contract import Contract
from domain.invoice_draft import (
    InvoiceDraft,
    service_window,
)
from domain.invoice_lines import BasisValue, InvoiceLine, LineKind
from domain.money import ZERO
from domain.terms import (
    BillingTiming,
    SubscriptionComponent,
)


def _subscription_ids(contract: Contract) -> list[str]:
    ids: dict[str, None] = {}
    for version in contract.versions:
        for c in version.components:
            if isinstance(c, SubscriptionComponent):
                ids[c.id] = None
    for component_id, _ in contract.billed.subscriptions:
        ids[component_id] = None
    return list(ids)


def _periods_to_reconcile(contract: Contract, until: date) -> list[ServicePeriod]:
    """Periods with service started by `until`, plus any period billed before (for credits)."""
    periods = set(
        periods_overlapping(
            contract.anchor, contract.frequency, contract.start_date, contract.end_date, until
        )
    )
    for _, period_start in contract.billed.subscriptions:
        periods.add(period_containing(contract.anchor, contract.frequency, period_start))
    return sorted(periods)


def _owed_segments(
    contract: Contract, component_id: str, window: ServicePeriod | None
) -> list[tuple[Segment, BillingTiming]]:
    """What the terms say is owed for the component in the days of a period the contract
    serves (`service_window`), split where the component's terms change: an amendment that
    leaves its amount, quantity and timing as they were does not cut its period (cut, the
    period's lines were rounded piece by piece, a cent off the whole, and an in-advance period
    was billed only up to the amendment)."""
    if window is None:
        return []
    owed = []
    if len(contract.versions) == 1:  # the common case: one set of terms, one segment
        component = contract.versions[0].component(component_id)
        if isinstance(component, SubscriptionComponent):
            segment = Segment(window.start, window.end, component.amount, component.quantity)
            owed.append((segment, component.billing_timing))
        return owed
    cuts = {window.start, window.end}
    cuts.update(
        v.effective_date for v in contract.versions if window.start < v.effective_date < window.end
    )
    for start, end in pairwise(sorted(cuts)):
        component = contract.terms_on(start).component(component_id)
        if not isinstance(component, SubscriptionComponent):
            continue
        segment = Segment(start, end, component.amount, component.quantity)
        if owed:
            last, timing = owed[-1]
            if (last.end, last.unit_amount, last.quantity, timing) == (
                    start, component.amount, component.quantity, component.billing_timing):
                owed[-1] = (replace(last, end=end), timing)
                continue
        owed.append((segment, component.billing_timing))
    return owed


def _covering(segments: Iterable[Segment], day: date) -> Segment | None:
    return next((s for s in segments if s.start <= day < s.end), None)


def bill_subscriptions(draft: InvoiceDraft) -> None:
    contract, cycle_date = draft.contract, draft.ctx.cycle_date
    component_ids = _subscription_ids(contract)
    if not component_ids:
        return
    for period in _periods_to_reconcile(contract, cycle_date):
        window = service_window(contract, period)
        for component_id in component_ids:
            key = (component_id, period.start)
            billed = contract.billed.subscriptions.get(key, ())
            owed = _owed_segments(contract, component_id, window)
            if not billed and len(owed) == 1:
                # Never billed, owed at one rate (most of a run): what the comparison of
                # _bill_segments comes to, without it.
                _bill_first(draft, key, period, window, *owed[0])
            elif billed or owed:
                _bill_segments(draft, key, period, window, billed, owed)


def _bill_first(
    draft: InvoiceDraft,
    key: PeriodKey,
    period: ServicePeriod,
    window: ServicePeriod | None,
    owed: Segment,
    timing: BillingTiming,
) -> None:
    """A period of a component never billed, owed at one rate: the whole segment, if due."""
    if timing is BillingTiming.IN_ARREARS:
        due = window is not None and window.end <= draft.ctx.cycle_date
    else:  # as `_is_due`: once the contract's service of the period has begun, a component
        # added by an amendment from a later day of it included
        due = (window.start if window is not None else owed.start) <= draft.ctx.cycle_date
    if due:
        _charge_line(draft, key[0], period, owed.start, owed.end, owed, first_billing=True)
        draft.settlement.subscriptions[key] = (owed,)


def _bill_segments(
    draft: InvoiceDraft,
    key: PeriodKey,
    period: ServicePeriod,
    window: ServicePeriod | None,
    billed: tuple[Segment, ...],
    owed: list[tuple[Segment, BillingTiming]],
) -> None:
    """A period of a component: what was billed against what is owed, day by day; the
    difference billed or credited where it is due.

    Credits and charges are made per stretch: a run of due days under one billed segment
    (credited) or one owed segment (charged), however many amendments cut it. A credit is
    the billed segment's amount less what its days kept are worth, each rounded: so each
    segment left billed is worth exactly its rounded price, and a period's lines add up
    to the cent however often it is amended (`_credited`).
    """
    component_id, cycle_date = key[0], draft.ctx.cycle_date
    timing = {s: t for s, t in owed}
    cuts = {period.start, period.end}
    for s in [*billed, *timing]:
        cuts.update((s.start, s.end))
    runs: list[tuple[date, date, Segment | None, Segment | None]] = []
    for start, end in pairwise(sorted(cuts)):
        was, now = _covering(billed, start), _covering(timing, start)
        if runs and runs[-1][1] == start and runs[-1][2:] == (was, now):
            runs[-1] = (runs[-1][0], end, was, now)
        else:
            runs.append((start, end, was, now))
    credits: list[_Stretch] = []
    charges: list[_Stretch] = []
    settled: list[_Stretch] = []  # what stays billed, by the segment it comes from
    for start, end, was, now in runs:
        same = (was is None and now is None) or (
            was is not None and now is not None and was.rate == now.rate
        )
        due = not same and _is_due(now, timing, window, start, cycle_date)
        keep = now if due else was
        if keep is not None:
            _extend(settled, start, end, keep)
        if due and was is not None:
            _extend(credits, start, end, was)
        if due and now is not None:
            _extend(charges, start, end, now)
    if not (credits or charges):
        return
    for stretch in credits:
        _credit_line(draft, component_id, period, stretch, credits)
    for stretch in charges:
        # A stretch none of whose days were billed is billed for the first time (the
        # in-arrears days of a period whose in-advance days were billed before, and the
        # reverse): a subscription line; one that replaces billed days is a proration.
        first = not any(b.start < stretch.end and stretch.start < b.end for b in billed)
        _charge_line(draft, component_id, period, stretch.start, stretch.end, stretch.segment,
                     first_billing=first)
    draft.settlement.subscriptions[key] = tuple(
        Segment(s.start, s.end, s.segment.unit_amount, s.segment.quantity) for s in settled)


@dataclass(frozen=True)
class _Stretch:
    """Adjacent days under one segment (billed or owed)."""

    start: date
    end: date
    segment: Segment


def _extend(stretches: list[_Stretch], start: date, end: date, segment: Segment) -> None:
    last = stretches[-1] if stretches else None
    if last is not None and last.end == start and last.segment == segment:
        stretches[-1] = _Stretch(last.start, end, segment)
    else:
        stretches.append(_Stretch(start, end, segment))


def _credited(
    draft: InvoiceDraft, component_id: str, period: ServicePeriod, stretch: _Stretch,
    credits: list[_Stretch],
) -> tuple[Decimal, date]:
    """The credit for a stretch of a billed segment, and where the part of the segment it is
    taken from starts: the segment's amount, or what was left of it by the credits before in
    it, less the rounded worth of the days on either side that stay billed."""
    billed = stretch.segment
    since = max((c.end for c in credits if c.segment == billed and c.end <= stretch.start),
                default=billed.start)

    def worth(start: date, end: date) -> Decimal:
        if start >= end:
            return ZERO
        used = ServicePeriod(start, end)
        return draft.money(prorate(billed.rate, used, period),
                           of=lambda: _priced_days(component_id, period, used, billed))

    amount = (worth(since, billed.end) - worth(since, stretch.start)
              - worth(stretch.end, billed.end))
    return amount, since


def _credit_line(
    draft: InvoiceDraft,
    component_id: str,
    period: ServicePeriod,
    stretch: _Stretch,
    credits: list[_Stretch],
) -> None:
    was, start, end = stretch.segment, stretch.start, stretch.end
    amount, since = _credited(draft, component_id, period, stretch, credits)
    used = ServicePeriod(start, end)
    draft.lines.append(InvoiceLine(
        component_id=component_id,
        kind=LineKind.PRORATION,
        description=f"{component_id}: credit for unused {_days_at(period, used, was)} (of "
                    f"{since.isoformat()} to {was.end.isoformat()} as billed)",
        quantity=was.quantity,
        unit_amount=was.unit_amount,
        amount=-amount,
        period_start=start,
        period_end=end,
        basis={**_days_basis(draft, period, used, was), "credit": True,
               # the credit is this billed stretch's rounded worth less its days kept
               "billed_stretch": [since.isoformat(), was.end.isoformat()],
               "ended": draft.contract.end_date is not None
               and start >= draft.contract.end_date},
    ))


def _priced_days(component_id: str, period: ServicePeriod, used: ServicePeriod,
                 segment: Segment) -> str:
    """What a subscription amount prices, as a failure to price it names it."""
    return (f"{component_id}: subscription {_days_at(period, used, segment)} (quantity "
            f"{segment.quantity} x {segment.unit_amount})")


def _days_at(period: ServicePeriod, used: ServicePeriod, segment: Segment) -> str:
    """The days a credit or charge covers and its rate, as its description says them."""
    partial = "" if used.days == period.days else f", {used.days}/{period.days} days"
    return (f"{used.start.isoformat()} to {used.end.isoformat()} at {segment.rate} per period"
            f"{partial}")


def _days_basis(
    draft: InvoiceDraft, period: ServicePeriod, used: ServicePeriod, segment: Segment
) -> dict[str, BasisValue]:
    """Why a credit or charge has its amount: its days of the period, the rate, and the terms
    in effect over those days (which priced the charge, or changed it on a credit)."""
    return {"period_days": period.days, "days": used.days,
            "full_period": [period.start.isoformat(), period.end.isoformat()],
            "terms_effective": draft.contract.terms_on(used.start).effective_date.isoformat(),
            "rate": str(segment.rate)}


def _is_due(
    now: Segment | None,
    timing: Mapping[Segment, BillingTiming],
    window: ServicePeriod | None,
    start: date,
    cycle_date: date,
) -> bool:
    if now is not None and timing[now] is BillingTiming.IN_ARREARS:
        # In arrears: the whole (possibly cut short) period must have been served.
        return window is not None and window.end <= cycle_date
    # In advance (and credits): once the contract's service of the period has begun, every
    # day of it, those after an amendment known ahead included (contract.md: in-advance
    # periods with start <= D; the next invoice carries an amendment's proration).
    return (window.start if window is not None else start) <= cycle_date


def _charge_line(
    draft: InvoiceDraft,
    component_id: str,
    period: ServicePeriod,
    start: date,
    end: date,
    now: Segment,
    *,
    first_billing: bool,
) -> None:
    used = ServicePeriod(start, end)
    kind = LineKind.SUBSCRIPTION if first_billing else LineKind.PRORATION
    label = "subscription" if first_billing else "charge for"
    draft.lines.append(InvoiceLine(
        component_id=component_id,
        kind=kind,
        description=f"{component_id}: {label} {_days_at(period, used, now)}",
        quantity=now.quantity,
        unit_amount=now.unit_amount,
        amount=draft.money(prorate(now.rate, used, period),
                           of=lambda: _priced_days(component_id, period, used, now)),
        period_start=start,
        period_end=end,
        basis=_days_basis(draft, period, used, now),
    ))


