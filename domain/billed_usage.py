"""Usage billed for a service period, matched to the components that price it at the period's end.

What a contract billed for usage is kept per component id and period (domain/billed.py), while
a period's usage is priced by the components in effect at its end (contract.md, Amendments).
An amendment that renames a usage component, or replaces it with another pricing the same
metric, leaves what was billed under the old id: the component now pricing the metric carries
it over, so usage is never billed twice. What was billed under a component whose metric no
component in force at the period's end is left to price is owed nothing: it is withdrawn, and
the period's next invoice credits it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from domain.billed import BilledState, UsageBilled
from domain.money import ZERO
from domain.terms import UsageComponent


@dataclass(frozen=True)
class UsageAccount:
    """What one component's usage of a period has been billed, under its id and the ids of
    the components it replaced (`carried_from`), whose billing it takes over."""

    billed: UsageBilled | None
    true_up: Decimal
    carried_from: tuple[str, ...] = ()

    @property
    def amount(self) -> Decimal:
        return self.billed.amount if self.billed is not None else ZERO

    @property
    def quantity(self) -> Decimal:
        return self.billed.quantity if self.billed is not None else ZERO


NOTHING_BILLED = UsageAccount(None, ZERO)


@dataclass(frozen=True)
class WithdrawnUsage:
    """Usage billed under a component that no longer prices its metric at the period's end."""

    component_id: str
    billed: UsageBilled
    true_up: Decimal


@dataclass(frozen=True)
class PeriodUsageBilled:
    accounts: Mapping[str, UsageAccount]
    withdrawn: tuple[WithdrawnUsage, ...]

    def of(self, component: UsageComponent) -> UsageAccount:
        return self.accounts.get(component.id, NOTHING_BILLED)


NOTHING_BILLED_IN_PERIOD = PeriodUsageBilled({}, ())


def usage_billed_by_period(billed: BilledState) -> dict[date, list[str]]:
    """The component ids with usage billed, per period start: read once per contract."""
    by_period: dict[date, list[str]] = {}
    for component_id, period_start in billed.usage:
        by_period.setdefault(period_start, []).append(component_id)
    return by_period


def usage_billed_for_period(
    billed: BilledState,
    period_start: date,
    billed_ids: Collection[str],
    components: Sequence[UsageComponent],
) -> PeriodUsageBilled:
    """Match what was billed for the period under `billed_ids` to the period-end `components`.

    A component keeps what was billed under its own id for its own metric. Each other entry
    goes to the first component pricing its metric that has nothing billed of its own (a
    rename), or else is withdrawn. Entries with nothing billed (the ids a carry-over already
    settled to zero) are left out.
    """
    if not billed_ids:
        return NOTHING_BILLED_IN_PERIOD  # most periods of a run: never billed before
    entries = {cid: billed.usage[(cid, period_start)] for cid in billed_ids}
    true_ups = {cid: billed.true_ups.get((cid, period_start), ZERO) for cid in entries}
    accounts: dict[str, UsageAccount] = {}
    for component in components:
        own = entries.get(component.id)
        # "" is a metric unknown to a settlement stored before metrics were kept (its id
        # is no longer in the terms): matched by id alone, as billing then did.
        if own is not None and own.metric in (component.metric, ""):
            accounts[component.id] = UsageAccount(own, true_ups[component.id])
    withdrawn: list[WithdrawnUsage] = []
    for cid in sorted(entries.keys() - accounts.keys()):
        entry, true_up = entries[cid], true_ups[cid]
        if not (entry.amount or entry.quantity or true_up):
            continue
        heir = next((c for c in components
                     if c.metric == entry.metric and c.id not in accounts), None)
        if heir is None:
            heir = next((c for c in components if c.metric == entry.metric
                         and accounts[c.id].carried_from), None)
        if heir is not None:
            accounts[heir.id] = _carry_over(accounts.get(heir.id), cid, entry, true_up)
        elif entry.metric:
            withdrawn.append(WithdrawnUsage(cid, entry, true_up))
    return PeriodUsageBilled(accounts, tuple(withdrawn))


def _carry_over(
    account: UsageAccount | None, component_id: str, entry: UsageBilled, true_up: Decimal
) -> UsageAccount:
    if account is None:
        return UsageAccount(entry, true_up, (component_id,))
    was = account.billed
    assert was is not None  # an heir holds only what it carried over
    merged = UsageBilled(
        quantity=was.quantity + entry.quantity,
        amount=was.amount + entry.amount,
        through=max(was.through, entry.through),
        final=was.final and entry.final,
        metric=was.metric,
    )
    return UsageAccount(merged, account.true_up + true_up,
                        (*account.carried_from, component_id))
