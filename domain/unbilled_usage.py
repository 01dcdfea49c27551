"""Usage the meters hold that no contract bills, said by every billing run instead of left
silent: usage of customers with no contract yet (billed once a contract of theirs prices it,
contract.md), and usage of a metric that no contract of its customer prices. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.billing_run import ContractOutcome
from domain.contract import Contract
from domain.terms import UsageComponent


@dataclass(frozen=True)
class UsageWithoutContract:
    """A customer's usage of one metric, accepted while no contract of that customer exists:
    kept, and billed once a contract for the customer prices it (contract.md). Until then
    every billing run names it, so that no customer's usage goes unbilled unnoticed."""

    customer_id: str
    metric: str
    event_count: int
    quantity_sum: Decimal
    since: datetime  # the start of its earliest meter bucket
    latest_at: datetime  # when its latest event occurred

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "metric": self.metric,
            "events": self.event_count,
            "quantity": str(self.quantity_sum),
            "since": self.since.isoformat(),
            "latest_at": self.latest_at.isoformat(),
        }


def usage_without_contract(
    buckets: Iterable[tuple[str, str, datetime, int, Decimal, datetime]],
) -> list[UsageWithoutContract]:
    """Meter buckets (customer, metric, bucket start, events, quantity, latest occurred_at),
    ordered by customer and metric, summed per customer and metric."""
    found: list[UsageWithoutContract] = []
    for customer_id, metric, start, events, quantity, latest in buckets:
        last = found[-1] if found else None
        if last is None or (last.customer_id, last.metric) != (customer_id, metric):
            found.append(UsageWithoutContract(customer_id, metric, events, quantity, start, latest))
        else:
            found[-1] = UsageWithoutContract(
                customer_id, metric, last.event_count + events, last.quantity_sum + quantity,
                min(last.since, start), max(last.latest_at, latest))
    return found


def usage_without_contract_warning(unclaimed: Sequence[UsageWithoutContract]) -> str:
    """What a run says of usage no contract bills yet: who, how much, since when."""
    customers: dict[str, list[UsageWithoutContract]] = {}
    for u in unclaimed:
        customers.setdefault(u.customer_id, []).append(u)
    named = []
    for customer, usage in list(customers.items())[:3]:
        metrics = ", ".join(f"{u.metric}: {u.event_count} since {u.since:%Y-%m-%d}"
                            for u in usage)
        named.append(f"{customer} ({metrics})")
    more = f" and {len(customers) - 3} more" if len(customers) > 3 else ""
    events = sum(u.event_count for u in unclaimed)
    return (f"usage of {_plural(len(customers), 'customer')} with no contract "
            f"({_plural(events, 'event')}) is not billed until a contract of theirs "
            f"prices it: {'; '.join(named)}{more}; `billcycle report usage-without-contract` "
            "lists it")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def metrics_priced(contracts: Iterable[Contract]) -> set[str]:
    """The metrics some version of these contracts prices."""
    return {c.metric for contract in contracts for version in contract.versions
            for c in version.components if isinstance(c, UsageComponent)}


def unpriced_usage(contract: Contract, siblings: Sequence[Contract],
                   events: Mapping[str, int]) -> str | None:
    """The note on a contract's outcome naming its customer's usage (`events` per metric)
    that no contract of the customer prices, so that no run bills it; None when there is none.
    """
    priced = metrics_priced([contract, *siblings])
    unpriced = sorted((metric, n) for metric, n in events.items() if metric not in priced)
    if not unpriced:
        return None
    listed = ", ".join(f"{metric} ({_plural(n, 'event')})" for metric, n in unpriced)
    return (f"usage of {contract.customer_id} that no contract of theirs prices is not billed: "
            f"{listed}")


def unpriced_usage_warning(outcomes: Iterable[ContractOutcome], batch_id: str) -> str | None:
    """What a run says of the usage its contracts' customers have and no contract prices."""
    notes = [o.unpriced_usage for o in outcomes if o.unpriced_usage]
    if not notes:
        return None
    more = f" (and {len(notes) - 1} more)" if len(notes) > 1 else ""
    return f"{notes[0]}{more}; `billcycle batch show {batch_id}` names each contract"
