"""Usage: each period's meter read and priced with the components in effect at its end, against
what was billed for it (late usage, retroactive changes, renamed components), progressive
billing at a threshold, minimum true-ups, and holds for usage not known to be complete."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal

from domain.billed import UsageBilled
from domain.billed_usage import (
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
from domain.inbox import lagging_watermark
from domain.invoice_draft import (
    ONE_DAY,
    InvoiceDraft,
    UsageNotBillable,
    UsageReader,
    service_window,
)
from domain.invoice_lines import BasisValue, InvoiceLine, LineKind
from domain.money import ZERO
from domain.pricing import minimum_true_up, price
from domain.terms import (
    Aggregation,
    UsageComponent,
    pricing_to_record,
)
from domain.usage import MeterReading, uncounted_example


def usage_quantity(component: UsageComponent, reading: MeterReading) -> Decimal:
    """The period quantity of a usage component under its aggregation."""
    return aggregated(component.aggregation, reading)


def aggregated(aggregation: Aggregation, reading: MeterReading) -> Decimal:
    """A meter reading's quantity under an aggregation."""
    match aggregation:
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


def _incomplete(draft: InvoiceDraft, metric: str, end_at: datetime) -> str | None:
    watermark = draft.ctx.watermarks.get(metric)
    if watermark is None or watermark >= end_at:
        return None
    retired = draft.ctx.retired_sources
    its, sends = lagging_watermark(watermark, end_at, draft.ctx.watermark_sources.get(metric),
                                   None if retired is None else retired.get(metric, {}), metric)
    return (
        f"usage of metric {metric} is incomplete: {its} is before the period end "
        f"{end_at.isoformat()}; the invoice is held until the producer sends {sends}, then run "
        "`billcycle retry` for this batch"
    )


def bill_usage(draft: InvoiceDraft, usage: UsageReader) -> None:
    contract, cycle_date = draft.contract, draft.ctx.cycle_date
    if not contract.usage_metrics() and not contract.billed.usage:
        # No usage priced, ever, nor billed (terms amended from the start may leave no version
        # pricing what was billed: credited below): nothing to read or bill (a third of a
        # typical book).
        return
    tz = contract.timezone
    late_periods = _periods_with_late_usage(draft, usage)
    changed_from = contract.changed_from
    billed_ids = usage_billed_by_period(contract.billed)
    for period, window, components in _usage_periods(contract, cycle_date):
        ids = billed_ids.get(period.start, [])
        if window.end > cycle_date:
            _bill_progressively(draft, usage, period, window, ids)
            continue
        period_billed = usage_billed_for_period(contract.billed, period.start, ids, components)
        late = period.start in late_periods
        # Terms amended, or service ended, on or before the period's end since it was invoiced:
        # priced again with the terms now in effect at its end, over the days now served.
        repriced = changed_from is not None and window.end >= changed_from
        revisit = late or repriced
        start_at, end_at = local_midnight(window.start, tz), local_midnight(window.end, tz)
        if not draft.planning:
            # First: a component that kept its id but prices another metric now settles the
            # same key after its credit, not before (the credit would erase its billing).
            for withdrawn in period_billed.withdrawn:
                if revisit or not withdrawn.billed.final:
                    _credit_withdrawn_usage(draft, period.start, window, withdrawn)
        for component in components:
            account = period_billed.of(component)
            billed = account.billed
            # A final period is revisited when priced again, when usage arrived late, or when
            # its service now runs past what was billed (a later end date; without this, an
            # invoice in between settled the usage revision past that usage: never billed).
            if (billed is not None and billed.final and not revisit
                    and billed.through >= window.end):
                continue
            reason = _incomplete(draft, component.metric, end_at)
            if reason is not None:
                # Also when revisiting an invoiced period (a source whose watermark is behind
                # appeared since): an invoice issued without its late usage would move the
                # usage revision past it, and it would never be billed.
                draft.holds.append(f"{component.id}: {reason}")
                continue
            try:
                reading = usage.read(component, start_at, end_at)
            except UsageNotBillable as exc:
                draft.holds.append(f"{component.id}: {exc}")
                continue
            if draft.planning:
                continue
            _add_usage_lines(draft, component, period, window, reading, account, late,
                             _changes_reaching(contract, window) if repriced else None)
    if contract.end_date is not None and not draft.planning:
        _credit_usage_after_end(draft, billed_ids, contract.end_date)


def _credit_usage_after_end(
    draft: InvoiceDraft, billed_ids: Mapping[date, list[str]], end_date: date
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


def _periods_with_late_usage(draft: InvoiceDraft, usage: UsageReader) -> set[date]:
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


def _changes_reaching(contract: Contract, window: ServicePeriod) -> list[str]:
    """Since the contract was last invoiced, the changes from a day within the window or
    before it: why its usage is priced again (the earliest of them is `changed_from`)."""
    return [why for day, why in contract.changes if day <= window.end]


def _add_usage_lines(
    draft: InvoiceDraft,
    component: UsageComponent,
    period: ServicePeriod,
    window: ServicePeriod,
    reading: MeterReading,
    account: UsageAccount,
    arrived_late: bool = False,
    changes: list[str] | None = None,
) -> None:
    """`arrived_late`: usage of the period arrived after it was invoiced. `changes`: the
    period is priced again because the contract changed after it was invoiced."""
    _note_uncounted(draft, component, window.start, window.end, reading)
    quantity = usage_quantity(component, reading)
    amount = _priced(draft, component, quantity, window.start, window.end)
    billed = account.billed
    invoiced = billed is not None and billed.final
    unchanged = invoiced and quantity == account.quantity and amount == account.amount
    if unchanged and changes is None:
        return
    # Usage is priced with the terms in effect at the period's end.
    terms_effective = draft.contract.terms_on(window.end - ONE_DAY).effective_date.isoformat()
    basis = _usage_basis(component, quantity, reading, amount, account, terms_effective)
    span = f"{window.start.isoformat()} to {window.end.isoformat()}"
    # Usage arriving for an invoiced period is late usage (contract.md), also where the
    # contract changed too: the description and basis then say both.
    late = invoiced and (arrived_late or changes is None)
    kind = LineKind.LATE_USAGE if late else LineKind.USAGE
    label = "late usage" if kind is LineKind.LATE_USAGE else "usage"
    said = f"{component.id}: {label} of {component.metric} {span}"
    since = draft.contract.changed_from
    if invoiced and changes is not None and since is not None:
        said += (f"{',' if late else ''} priced again: the contract changed from "
                 f"{since.isoformat()} after it was invoiced")
        basis["contract_changed_from"] = since.isoformat()
        basis["contract_changes"] = changes
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
    key = (component.id, period.start)
    draft.settlement.usage[key] = UsageBilled(quantity, amount, window.end, True, component.metric)
    minimum = _period_minimum(component, period, window)
    owed_true_up = draft.money(minimum_true_up(amount, minimum), of=lambda: (
        f"{component.id}: minimum true-up {window.start.isoformat()} to "
        f"{window.end.isoformat()}"))
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
        draft.settlement.true_ups[key] = owed_true_up  # the true-ups carried over too
    _settle_carried(draft, period.start, account, window.end, true_ups=True)


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
    draft: InvoiceDraft, period_start: date, account: UsageAccount, through: date,
    true_ups: bool = False,
) -> None:
    """The ids a component carried usage billed over from now hold nothing: it holds it all
    (and their true-ups, when it settles its own: a period's final billing)."""
    for carried in account.carried_from:
        key = (carried, period_start)
        was = draft.contract.billed.usage[key]
        draft.settlement.usage[key] = UsageBilled(ZERO, ZERO, through, True, was.metric)
        if true_ups and key in draft.contract.billed.true_ups:
            draft.settlement.true_ups[key] = ZERO


def _credit_withdrawn_usage(
    draft: InvoiceDraft,
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
    if reading.uncounted:  # see _note_uncounted
        basis["uncounted_events"] = reading.uncounted
        basis["uncounted_example"] = uncounted_example(reading.uncounted_first or "")
    if reading.untagged_within is not None:  # a shared period: only these spans' is its own
        basis["untagged_usage_within"] = [
            f"{lo.astimezone(UTC):%Y-%m-%d %H:%M} to {hi.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
            for lo, hi in reading.untagged_within]
    return basis


def _note_uncounted(
    draft: InvoiceDraft, component: UsageComponent, start: date, end: date,
    reading: MeterReading,
) -> None:
    """Usage whose unique_count property holds a value it does not count (a decimal, null,
    array or object: domain.usage.property_values) is accepted, since whether a contract
    counts that property is not known when it arrives (its contract may come later, another
    may sum the metric), and counts nobody: said with the period billed, never silent."""
    if reading.uncounted:
        n = reading.uncounted
        draft.uncounted.append(
            f"{component.id} ({component.metric}) {start.isoformat()} to {end.isoformat()}: "
            f"{n} event{'' if n == 1 else 's'} whose {component.unique_property} is not "
            f"counted, e.g. {uncounted_example(reading.uncounted_first or '')}")


def uncounted_note(customer_id: str, uncounted: list[str]) -> str | None:
    """The note on a contract's outcome naming the usage of its periods billed that holds
    values unique_count does not count (`_note_uncounted`); None when there is none."""
    if not uncounted:
        return None
    return (f"usage of {customer_id} whose counted property holds a value unique_count does "
            f"not count (a decimal, null, array or object) counts nobody: "
            f"{'; '.join(uncounted)}; unique_count counts string, integer and boolean values: "
            "fix the producer; an event sent again under a new id with the value as a string "
            "is counted by the next run (and is usage of its metric for every other component "
            "too)")


def _priced(draft: InvoiceDraft, component: UsageComponent, quantity: Decimal, start: date,
            end: date) -> Decimal:
    """The rounded price of a usage quantity of [start, end); zero quantity is zero whatever
    the model."""
    return draft.money(price(component.pricing, quantity) if quantity else ZERO,
                       of=lambda: f"{component.id}: usage of metric {component.metric} "
                                  f"{start.isoformat()} to {end.isoformat()}, quantity "
                                  f"{quantity}, {pricing_to_record(component.pricing)['model']}"
                                  " pricing")


def _is_additive(component: UsageComponent) -> bool:
    return component.aggregation in (Aggregation.SUM, Aggregation.COUNT)


def _bill_progressively(
    draft: InvoiceDraft,
    usage: UsageReader,
    period: ServicePeriod,
    window: ServicePeriod,
    billed_ids: list[str],
) -> None:
    """Progressive billing: bill usage to date once its unbilled amount reaches the threshold.
    The components in effect the day before the cycle date price it, and what was billed is
    matched to them (not to the period-end terms, which may differ)."""
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
    components = _usage_components(contract, cycle_date - ONE_DAY)
    period_billed = usage_billed_for_period(contract.billed, period.start, billed_ids, components)
    for component in components:
        if _incomplete(draft, component.metric, to_date_at) is not None:
            return  # usage to date is not known to be complete: wait, do not hold the invoice
        try:
            reading = usage.read(component, start_at, to_date_at)
        except UsageNotBillable:
            return
        quantity = usage_quantity(component, reading)
        amount = _priced(draft, component, quantity, window.start, cycle_date)
        priced.append((component, reading, quantity, amount, period_billed.of(component)))
    unbilled = sum((amount - account.amount for _, _, _, amount, account in priced), ZERO)
    if unbilled <= ZERO or unbilled < threshold:
        return
    withdrawn_here = {w.component_id: w for w in period_billed.withdrawn}
    for component, reading, quantity, amount, account in priced:
        if amount == account.amount:
            continue
        if component.id in withdrawn_here:  # its id billed another metric: credit that first
            _credit_withdrawn_usage(draft, period.start, window, withdrawn_here[component.id])
        _note_uncounted(draft, component, window.start, cycle_date, reading)
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


