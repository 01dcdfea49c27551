"""The billing rules: what a contract owes on a cycle date, reconciled against what it was billed.

`bill_contract` is pure: it reads the contract aggregate, usage through a `UsageReader`, and the
cycle date, and returns the invoice lines due with the settlement that records them, a hold
with its reasons, or the next date anything falls due. Every amount is rounded once, by
`domain.money.round_money`, as the line is made.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Protocol

from domain.billed import BilledState, PeriodKey, Segment, UsageBilled
from domain.billed_usage import (
    PeriodUsageBilled,
    UsageAccount,
    WithdrawnUsage,
    usage_billed_by_period,
    usage_billed_for_period,
)
from domain.calendar import (
    ServicePeriod,
    local_date,
    local_midnight,
    period_containing,
    periods_overlapping,
    prorate,
)
from domain.contract import Contract
from domain.invoice_lines import BasisValue, InvoiceLine, LineKind
from domain.money import ZERO, round_money
from domain.pricing import minimum_true_up, price
from domain.terms import (
    Aggregation,
    BillingTiming,
    SubscriptionComponent,
    UsageComponent,
)
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


@dataclass(frozen=True)
class InvoiceDue:
    lines: tuple[InvoiceLine, ...]
    settlement: BilledState
    issue_date: date
    due_date: date

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)


@dataclass(frozen=True)
class Held:
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class NothingDue:
    next_due: date | None


BillingOutcome = InvoiceDue | Held | NothingDue

_KIND_ORDER = {kind: i for i, kind in enumerate(LineKind)}


@dataclass
class _Draft:
    contract: Contract
    ctx: BillingContext
    lines: list[InvoiceLine] = field(default_factory=list)
    settlement: BilledState = field(default_factory=BilledState)
    holds: list[str] = field(default_factory=list)
    planning: bool = False  # only noting the meter reads: nothing is priced

    def money(self, amount: Decimal) -> Decimal:
        return round_money(amount, self.contract.currency)


def bill_contract(contract: Contract, ctx: BillingContext, usage: UsageReader) -> BillingOutcome:
    """Everything due from `contract` by `ctx.cycle_date` and not yet billed."""
    draft = _Draft(contract, ctx)
    _bill_subscriptions(draft)
    _bill_usage(draft, usage)
    _bill_milestones(draft)
    if draft.holds:
        return Held(tuple(draft.holds))
    if not draft.lines:
        return NothingDue(next_due_date(contract, ctx.cycle_date))
    draft.settlement.usage_revision = ctx.log_position
    terms = contract.terms_on(ctx.cycle_date)
    lines = sorted(
        draft.lines, key=lambda ln: (_KIND_ORDER[ln.kind], ln.period_start, ln.component_id)
    )
    return InvoiceDue(
        lines=tuple(lines),
        settlement=draft.settlement,
        issue_date=ctx.cycle_date,
        due_date=ctx.cycle_date + timedelta(days=terms.payment_terms_days),
    )


def plan_usage_reads(contract: Contract, ctx: BillingContext, usage: UsageReader) -> None:
    """Ask `usage` for every read `bill_contract` would make, and nothing else.

    Only the usage rules read meters, and which meters they read does not depend on the
    subscriptions or milestones, so a run can plan a chunk's reads without billing it twice.
    """
    _bill_usage(_Draft(contract, ctx, planning=True), usage)


def service_window(contract: Contract, period: ServicePeriod) -> ServicePeriod | None:
    """The days of `period` the contract serves: cut by start_date and end_date."""
    end = period.end if contract.end_date is None else min(period.end, contract.end_date)
    start = max(period.start, contract.start_date)
    return ServicePeriod(start, end) if start < end else None


# --- subscriptions ----------------------------------------------------------------------------


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
    serves (`service_window`), split where terms change."""
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
        if isinstance(component, SubscriptionComponent):
            segment = Segment(start, end, component.amount, component.quantity)
            owed.append((segment, component.billing_timing))
    return owed


def _covering(segments: Iterable[Segment], day: date) -> Segment | None:
    return next((s for s in segments if s.start <= day < s.end), None)


def _bill_subscriptions(draft: _Draft) -> None:
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
    draft: _Draft,
    key: PeriodKey,
    period: ServicePeriod,
    window: ServicePeriod | None,
    owed: Segment,
    timing: BillingTiming,
) -> None:
    """A period of a component never billed, owed at one rate: the whole segment, if due."""
    if timing is BillingTiming.IN_ARREARS:
        due = window is not None and window.end <= draft.ctx.cycle_date
    else:
        due = owed.start <= draft.ctx.cycle_date
    if due:
        _charge_line(draft, key[0], period, owed.start, owed.end, owed, first_billing=True)
        draft.settlement.subscriptions[key] = (owed,)


def _bill_segments(
    draft: _Draft,
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
        _charge_line(draft, component_id, period, stretch.start, stretch.end, stretch.segment,
                     first_billing=not billed)
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
    draft: _Draft, period: ServicePeriod, stretch: _Stretch, credits: list[_Stretch]
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
        return draft.money(prorate(billed.rate, ServicePeriod(start, end), period))

    amount = (worth(since, billed.end) - worth(since, stretch.start)
              - worth(stretch.end, billed.end))
    return amount, since


def _credit_line(
    draft: _Draft,
    component_id: str,
    period: ServicePeriod,
    stretch: _Stretch,
    credits: list[_Stretch],
) -> None:
    was, start, end = stretch.segment, stretch.start, stretch.end
    amount, since = _credited(draft, period, stretch, credits)
    used = ServicePeriod(start, end)
    span = f"{start.isoformat()} to {end.isoformat()}"
    partial = "" if used.days == period.days else f", {used.days}/{period.days} days"
    draft.lines.append(InvoiceLine(
        component_id=component_id,
        kind=LineKind.PRORATION,
        description=f"{component_id}: credit for unused {span} at {was.rate} per period"
                    f"{partial}",
        quantity=was.quantity,
        unit_amount=was.unit_amount,
        amount=-amount,
        period_start=start,
        period_end=end,
        basis={"period_days": period.days, "days": used.days,
               "full_period": [period.start.isoformat(), period.end.isoformat()],
               "terms_effective": draft.contract.terms_on(start).effective_date.isoformat(),
               "rate": str(was.rate), "credit": True,
               # the credit is this billed stretch's rounded worth less its days kept
               "billed_stretch": [since.isoformat(), was.end.isoformat()],
               "ended": draft.contract.end_date is not None
               and start >= draft.contract.end_date},
    ))


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
    return start <= cycle_date


def _charge_line(
    draft: _Draft,
    component_id: str,
    period: ServicePeriod,
    start: date,
    end: date,
    now: Segment,
    *,
    first_billing: bool,
) -> None:
    used = ServicePeriod(start, end)
    span = f"{start.isoformat()} to {end.isoformat()}"
    partial = "" if used.days == period.days else f", {used.days}/{period.days} days"
    kind = LineKind.SUBSCRIPTION if first_billing else LineKind.PRORATION
    label = "subscription" if first_billing else "charge for"
    draft.lines.append(InvoiceLine(
        component_id=component_id,
        kind=kind,
        description=f"{component_id}: {label} {span} at {now.rate} per period{partial}",
        quantity=now.quantity,
        unit_amount=now.unit_amount,
        amount=draft.money(prorate(now.rate, used, period)),
        period_start=start,
        period_end=end,
        # The terms in effect over these days priced the charge.
        basis={"period_days": period.days, "days": used.days,
               "full_period": [period.start.isoformat(), period.end.isoformat()],
               "terms_effective": draft.contract.terms_on(start).effective_date.isoformat(),
               "rate": str(now.rate)},
    ))


# --- usage ------------------------------------------------------------------------------------


def usage_quantity(component: UsageComponent, reading: MeterReading) -> Decimal:
    """The period quantity of a usage component under its aggregation."""
    match component.aggregation:
        case Aggregation.SUM:
            return reading.quantity_sum
        case Aggregation.COUNT:
            return Decimal(reading.event_count)
        case Aggregation.MAX:
            return reading.quantity_max
        case Aggregation.LATEST:
            return reading.latest_quantity
        case Aggregation.UNIQUE_COUNT:
            return Decimal(reading.unique_count)


def _usage_components(contract: Contract, day: date) -> list[UsageComponent]:
    return [c for c in contract.terms_on(day).components if isinstance(c, UsageComponent)]


def _usage_periods(
    contract: Contract, until: date
) -> Iterator[tuple[ServicePeriod, ServicePeriod, list[UsageComponent]]]:
    """Each period up to the one holding `until`, the days of it the contract serves, and the
    usage components pricing those days: the terms in effect at the period's end price its
    usage (contract.md, Amendments)."""
    for period in periods_overlapping(
        contract.anchor, contract.frequency, contract.start_date, contract.end_date, until
    ):
        window = service_window(contract, period)
        if window is not None:
            yield period, window, _usage_components(contract, window.end - ONE_DAY)


def usage_windows(contract: Contract, metric: str, until: date) -> list[tuple[datetime, datetime]]:
    """The instants whose usage of `metric` the contract bills, up to the period holding
    `until`: its service windows whose terms at the period's end price the metric, from local
    midnight to local midnight, adjacent ones joined. What a contract amended away from a
    metric, or amended to price it later, leaves out is not in them."""
    windows: list[tuple[datetime, datetime]] = []
    tz = contract.timezone
    for _, window, components in _usage_periods(contract, until):
        if not any(c.metric == metric for c in components):
            continue
        start, end = local_midnight(window.start, tz), local_midnight(window.end, tz)
        if windows and windows[-1][1] == start:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


def _incomplete(draft: _Draft, metric: str, end_at: datetime) -> str | None:
    watermark = draft.ctx.watermarks.get(metric)
    if watermark is None or watermark >= end_at:
        return None
    return (
        f"usage of metric {metric} is incomplete: its watermark {watermark.isoformat()} is "
        f"before the period end {end_at.isoformat()}; the invoice is held until the producer "
        f"sends usage.watermark complete_through >= {end_at.isoformat()}, then run "
        "`billcycle retry` for this batch"
    )


def _bill_usage(draft: _Draft, usage: UsageReader) -> None:
    contract, cycle_date = draft.contract, draft.ctx.cycle_date
    if not contract.usage_metrics():
        return  # no usage priced, ever: nothing to read or bill (a third of a typical book)
    tz = contract.timezone
    late_periods = _periods_with_late_usage(draft, usage)
    changed_from = contract.changed_from
    billed_ids = usage_billed_by_period(contract.billed)
    for period, window, components in _usage_periods(contract, cycle_date):
        period_billed = usage_billed_for_period(
            contract.billed, period.start, billed_ids.get(period.start, ()), components)
        if window.end > cycle_date:
            _bill_progressively(draft, usage, period, window, period_billed)
            continue
        late = period.start in late_periods
        # Terms amended, or service ended, on or before the period's end since it was invoiced:
        # priced again with the terms now in effect at its end, over the days now served.
        repriced = not late and changed_from is not None and window.end >= changed_from
        revisit = late or repriced
        start_at, end_at = local_midnight(window.start, tz), local_midnight(window.end, tz)
        for component in components:
            account = period_billed.of(component)
            billed = account.billed
            if billed is not None and billed.final and not revisit:
                continue
            reason = _incomplete(draft, component.metric, end_at)
            if reason is not None:
                if billed is None or not billed.final:
                    draft.holds.append(f"{component.id}: {reason}")
                continue
            try:
                reading = usage.read(component, start_at, end_at)
            except UsageNotBillable as exc:
                draft.holds.append(f"{component.id}: {exc}")
                continue
            if draft.planning:
                continue
            _add_usage_lines(draft, component, period, window, reading, account,
                             changed_from if repriced else None)
        if not draft.planning:
            for withdrawn in period_billed.withdrawn:
                if revisit or not withdrawn.billed.final:
                    _credit_withdrawn_usage(draft, period.start, window, withdrawn)
    if contract.end_date is not None and not draft.planning:
        _credit_usage_after_end(draft, billed_ids, contract.end_date)


def _credit_usage_after_end(
    draft: _Draft, billed_ids: Mapping[date, list[str]], end_date: date
) -> None:
    """Usage billed for periods starting on or after the end date (a termination received
    after they were invoiced) is owed nothing: contract.md, Termination."""
    contract = draft.contract
    for period_start in sorted(p for p in billed_ids if p >= end_date):
        period = period_containing(contract.anchor, contract.frequency, period_start)
        for cid in billed_ids[period_start]:
            key = (cid, period_start)
            billed = contract.billed.usage[key]
            true_up = contract.billed.true_ups.get(key, ZERO)
            if billed.amount or billed.quantity or true_up:
                _credit_withdrawn_usage(
                    draft, period_start, period, WithdrawnUsage(cid, billed, true_up),
                    f"service ended on {end_date.isoformat()}, before this period")


def _periods_with_late_usage(draft: _Draft, usage: UsageReader) -> set[date]:
    """Starts of final-billed periods whose usage changed since it was billed."""
    contract = draft.contract
    if not contract.billed.usage:
        return set()
    before = local_midnight(draft.ctx.cycle_date, contract.timezone)
    metrics = contract.usage_metrics()
    late: set[date] = set()
    for metric in sorted(metrics):
        for bucket in usage.changed_since(metric, contract.billed.usage_revision, before):
            day = local_date(bucket, contract.timezone)
            late.add(period_containing(contract.anchor, contract.frequency, day).start)
    return late


def _add_usage_lines(
    draft: _Draft,
    component: UsageComponent,
    period: ServicePeriod,
    window: ServicePeriod,
    reading: MeterReading,
    account: UsageAccount,
    changed_from: date | None = None,
) -> None:
    """`changed_from`: the period is priced again because the contract changed from that
    date after it was invoiced (not because usage arrived late)."""
    quantity = usage_quantity(component, reading)
    amount = _priced(draft, component, quantity)
    billed = account.billed
    late = billed is not None and billed.final
    unchanged = late and quantity == account.quantity and amount == account.amount
    if unchanged and changed_from is None:
        return
    # Usage is priced with the terms in effect at the period's end.
    terms_effective = draft.contract.terms_on(window.end - ONE_DAY).effective_date.isoformat()
    basis = _usage_basis(component, quantity, reading, amount, account, terms_effective)
    span = f"{window.start.isoformat()} to {window.end.isoformat()}"
    kind = LineKind.LATE_USAGE if late and changed_from is None else LineKind.USAGE
    label = "late usage" if kind is LineKind.LATE_USAGE else "usage"
    said = f"{component.id}: {label} of {component.metric} {span}"
    if late and changed_from is not None:
        said += (f" priced again: the contract changed from {changed_from.isoformat()} "
                 "after it was invoiced")
        basis["contract_changed_from"] = changed_from.isoformat()
    if not unchanged:  # priced again for a change of terms, only a minimum may differ
        draft.lines.append(InvoiceLine(
            component_id=component.id,
            kind=kind,
            description=said,
            quantity=quantity - account.quantity if _is_additive(component) else quantity,
            amount=amount - account.amount,
            period_start=window.start,
            period_end=window.end,
            basis=basis,
        ))
    period_start = period.start
    key = (component.id, period_start)
    draft.settlement.usage[key] = UsageBilled(quantity, amount, window.end, True, component.metric)
    minimum = _period_minimum(component, period, window)
    owed_true_up = draft.money(minimum_true_up(amount, minimum))
    if owed_true_up != account.true_up:
        basis_minimum: dict[str, BasisValue] = {
            "minimum_amount": str(component.minimum_amount), "usage_amount": str(amount),
            "terms_effective": terms_effective}
        if minimum != component.minimum_amount:
            basis_minimum.update(prorated_minimum=str(minimum), days=window.days,
                                 period_days=period.days)
        draft.lines.append(InvoiceLine(
            component_id=component.id,
            kind=LineKind.MINIMUM_TRUE_UP,
            description=f"{component.id}: minimum {component.minimum_amount} for {span}"
                        + ("" if minimum == component.minimum_amount
                           else f", {window.days}/{period.days} days"),
            quantity=Decimal(1),
            amount=owed_true_up - account.true_up,
            period_start=window.start,
            period_end=window.end,
            basis=basis_minimum,
        ))
    if owed_true_up != account.true_up or account.carried_from:
        draft.settlement.true_ups[key] = owed_true_up
        for carried in account.carried_from:
            if (carried, period_start) in draft.contract.billed.true_ups:
                draft.settlement.true_ups[(carried, period_start)] = ZERO
    _settle_carried(draft, period_start, account, window.end)


def _period_minimum(
    component: UsageComponent, period: ServicePeriod, window: ServicePeriod
) -> Decimal | None:
    """The usage minimum of a period, prorated by calendar days where the contract's start
    or end cuts the period short (contract.md, Periods), unrounded: the true-up is rounded."""
    minimum = component.minimum_amount
    if minimum is None or window == period:
        return minimum
    return prorate(minimum, window, period)


def _settle_carried(
    draft: _Draft, period_start: date, account: UsageAccount, through: date
) -> None:
    """The ids a component carried usage billed over from now hold nothing: it holds it all."""
    for carried in account.carried_from:
        key = (carried, period_start)
        was = draft.contract.billed.usage[key]
        draft.settlement.usage[key] = UsageBilled(ZERO, ZERO, through, True, was.metric)


def _credit_withdrawn_usage(
    draft: _Draft,
    period_start: date,
    window: ServicePeriod,
    withdrawn: WithdrawnUsage,
    why: str | None = None,
) -> None:
    """Usage billed that is owed nothing now: under a component the period-end terms no
    longer price, or in a period the contract no longer serves."""
    billed, cid = withdrawn.billed, withdrawn.component_id
    span = f"{window.start.isoformat()} to {window.end.isoformat()}"
    terms_effective = draft.contract.terms_on(window.end - ONE_DAY).effective_date.isoformat()
    why = why or f"the terms effective {terms_effective} do not price it with {cid}"
    basis: dict[str, BasisValue] = {
        "metric": billed.metric, "already_billed": str(billed.amount),
        "priced_amount": "0", "terms_effective": terms_effective, "withdrawn": True,
    }
    if billed.amount or billed.quantity:
        draft.lines.append(InvoiceLine(
            component_id=cid,
            kind=LineKind.USAGE,
            description=f"{cid}: usage of {billed.metric} {span} credited: {why}",
            quantity=-billed.quantity,
            amount=-billed.amount,
            period_start=window.start,
            period_end=window.end,
            basis=basis,
        ))
    if withdrawn.true_up:
        draft.lines.append(InvoiceLine(
            component_id=cid,
            kind=LineKind.MINIMUM_TRUE_UP,
            description=f"{cid}: minimum for {span} credited: {why}",
            quantity=Decimal(1),
            amount=-withdrawn.true_up,
            period_start=window.start,
            period_end=window.end,
            basis={**basis, "already_billed": str(withdrawn.true_up)},
        ))
    key = (cid, period_start)
    draft.settlement.usage[key] = UsageBilled(ZERO, ZERO, window.end, True, billed.metric)
    if withdrawn.true_up:
        draft.settlement.true_ups[key] = ZERO


def _usage_basis(
    component: UsageComponent,
    quantity: Decimal,
    reading: MeterReading,
    amount: Decimal,
    account: UsageAccount,
    terms_effective: str,
) -> dict[str, BasisValue]:
    """Why a usage line has its amount: the meter read, the price, what was billed before
    (and under which earlier component ids, where an amendment renamed the component)."""
    basis: dict[str, BasisValue] = {
        "metric": component.metric,
        "aggregation": component.aggregation.value,
        "quantity": str(quantity),
        "events": reading.event_count,
        "usage_revision": reading.revision,
        "priced_amount": str(amount),
        "already_billed": str(account.amount),
        "terms_effective": terms_effective,
    }
    if account.carried_from:
        basis["billed_as"] = list(account.carried_from)
    return basis


def _priced(draft: _Draft, component: UsageComponent, quantity: Decimal) -> Decimal:
    """The rounded price of a usage quantity; zero quantity is zero whatever the model."""
    return draft.money(price(component.pricing, quantity) if quantity else ZERO)


def _is_additive(component: UsageComponent) -> bool:
    return component.aggregation in (Aggregation.SUM, Aggregation.COUNT)


def _bill_progressively(
    draft: _Draft,
    usage: UsageReader,
    period: ServicePeriod,
    window: ServicePeriod,
    period_billed: PeriodUsageBilled,
) -> None:
    """Progressive billing: bill usage to date once its unbilled amount reaches the threshold."""
    contract, cycle_date = draft.contract, draft.ctx.cycle_date
    if not window.start < cycle_date:
        return
    terms = contract.terms_on(cycle_date - ONE_DAY)
    threshold = terms.usage_threshold_amount
    if threshold is None:
        return
    tz = contract.timezone
    start_at, to_date_at = local_midnight(window.start, tz), local_midnight(cycle_date, tz)
    priced: list[tuple[UsageComponent, MeterReading, Decimal, Decimal, UsageAccount]] = []
    for component in _usage_components(contract, cycle_date - ONE_DAY):
        if _incomplete(draft, component.metric, to_date_at) is not None:
            return  # usage to date is not known to be complete: wait, do not hold the invoice
        try:
            reading = usage.read(component, start_at, to_date_at)
        except UsageNotBillable:
            return
        quantity = usage_quantity(component, reading)
        amount = _priced(draft, component, quantity)
        priced.append((component, reading, quantity, amount, period_billed.of(component)))
    unbilled = sum((amount - account.amount for _, _, _, amount, account in priced), ZERO)
    if unbilled <= ZERO or unbilled < threshold:
        return
    for component, reading, quantity, amount, account in priced:
        if amount == account.amount:
            continue
        draft.lines.append(InvoiceLine(
            component_id=component.id,
            kind=LineKind.USAGE,
            description=(
                f"{component.id}: usage of {component.metric} {window.start.isoformat()} to "
                f"{cycle_date.isoformat()} (threshold {threshold} reached)"
            ),
            quantity=quantity - account.quantity if _is_additive(component) else quantity,
            amount=amount - account.amount,
            period_start=window.start,
            period_end=cycle_date,
            basis={
                **_usage_basis(component, quantity, reading, amount, account,
                               terms.effective_date.isoformat()),
                "threshold": str(threshold),
                "progressive": True,
            },
        ))
        draft.settlement.usage[(component.id, period.start)] = UsageBilled(
            quantity, amount, cycle_date, False, component.metric)
        _settle_carried(draft, period.start, account, cycle_date)


# --- milestones -------------------------------------------------------------------------------


def _bill_milestones(draft: _Draft) -> None:
    contract = draft.contract
    for milestone, completed_on in sorted(contract.milestones.items(), key=lambda kv: kv[1]):
        component = contract.milestone_component(milestone)
        if component is None or completed_on > draft.ctx.cycle_date:
            continue
        if component.id in contract.billed.milestones:
            continue
        amount = draft.money(component.amount)
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


def next_due_date(contract: Contract, cycle_date: date) -> date | None:
    """The first date after `cycle_date` on which a run would find something due."""
    if contract.end_date is not None and contract.end_date <= contract.start_date:
        return None
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
