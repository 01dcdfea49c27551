"""Usage the meters hold that no contract bills, said by every billing run instead of left
silent: usage of customers with no contract yet (billed once a contract of theirs prices it,
contract.md), usage of a metric that no contract of its customer prices, usage outside
the service of every contract that prices its metric, and usage whose `contract_id` names no
contract of its customer that prices its metric. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, NamedTuple

from domain.calendar import local_midnight
from domain.contract import Contract
from domain.terms import UsageComponent
from domain.usage import BUCKET


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


@dataclass(frozen=True)
class MeteredUsage:
    """A customer's usage of one metric as the meters hold it: how many events, the starts
    of its first and last buckets, and the events of each `contract_id` it was sent with."""

    events: int
    first_bucket: datetime
    last_bucket: datetime
    tagged: Mapping[str, int] = field(default_factory=dict)  # contract_id -> events ("" left out)


def metered_usage(
    rows: Iterable[tuple[str, str, str, int, datetime, datetime]],
) -> dict[str, dict[str, MeteredUsage]]:
    """Per customer and metric, the meters' totals per contract tag (customer, metric,
    contract_id or "", events, first and last bucket start) combined."""
    found: dict[str, dict[str, MeteredUsage]] = {}
    for customer_id, metric, tag, events, first, last in rows:
        metrics = found.setdefault(customer_id, {})
        known = metrics.get(metric)
        tagged = dict(known.tagged) if known else {}
        if tag:
            tagged[tag] = tagged.get(tag, 0) + events
        if known is not None:
            events += known.events
            first, last = min(first, known.first_bucket), max(last, known.last_bucket)
        metrics[metric] = MeteredUsage(events, first, last, tagged)
    return found


def metrics_priced(contracts: Iterable[Contract]) -> set[str]:
    """The metrics some version of these contracts prices."""
    return {c.metric for contract in contracts for version in contract.versions
            for c in version.components if isinstance(c, UsageComponent)}


def unpriced_usage(contract: Contract, siblings: Sequence[Contract],
                   usage: Mapping[str, MeteredUsage]) -> str | None:
    """The note on a contract's outcome naming its customer's usage (per metric) that no
    contract of the customer prices, so that no run bills it; None when there is none."""
    priced = metrics_priced([contract, *siblings])
    unpriced = sorted((metric, u.events) for metric, u in usage.items() if metric not in priced)
    if not unpriced:
        return None
    listed = ", ".join(f"{metric} ({_plural(n, 'event')})" for metric, n in unpriced)
    return (f"usage of {contract.customer_id} that no contract of theirs prices is not billed: "
            f"{listed}")


class _Service(NamedTuple):
    """A contract's service as instants: from local midnight of its start date to local
    midnight of its end date (None: no end), and the metrics it prices."""

    contract: Contract
    metrics: set[str]
    starts: datetime
    ends: datetime | None

    @classmethod
    def of(cls, contract: Contract) -> _Service:
        end = contract.end_date
        return cls(contract, metrics_priced([contract]),
                   local_midnight(contract.start_date, contract.timezone),
                   None if end is None else local_midnight(end, contract.timezone))


def usage_outside_service(contract: Contract, siblings: Sequence[Contract],
                          usage: Mapping[str, MeteredUsage]) -> str | None:
    """The note on a contract's outcome naming its customer's usage of a priced metric that
    lies before the earliest start, or from the latest end, of the contracts pricing that
    metric: no period of theirs holds it, so no run bills it. None when there is none.

    Periods start at local midnight of `start_date` and the last ends at local midnight of
    `end_date` (contract.md, Periods and Termination); meter buckets are 15 minutes, and every
    timezone's offset today is a whole number of quarter hours, so a midnight is a bucket's
    edge.
    """
    if not siblings and contract.end_date is None:  # the common case, decided at once
        starts = local_midnight(contract.start_date, contract.timezone)
        if all(u.first_bucket >= starts for u in usage.values()):
            return None
    services = [_Service.of(c) for c in (contract, *siblings)]
    found = []
    for metric, metered in sorted(usage.items()):
        pricing = [s for s in services if metric in s.metrics]
        if not pricing:
            continue  # unpriced: `unpriced_usage` names it
        first = min(pricing, key=attrgetter("starts"))
        if metered.first_bucket < first.starts:
            found.append(f"{metric} from {metered.first_bucket:%Y-%m-%d %H:%M} UTC, before "
                         f"service starts on {first.contract.start_date} "
                         f"({first.contract.contract_id})")
        if any(s.ends is None for s in pricing):
            continue  # a contract pricing it has no end
        last = max(pricing, key=attrgetter("ends"))
        if last.ends is not None and metered.last_bucket >= last.ends:
            until = metered.last_bucket + BUCKET
            found.append(f"{metric} until {until:%Y-%m-%d %H:%M} UTC, after service ended on "
                         f"{last.contract.end_date} ({last.contract.contract_id})")
    if not found:
        return None
    return (f"usage of {contract.customer_id} outside the service of the contracts pricing it "
            f"is not billed: {'; '.join(found)}")


def misattributed_usage(contract: Contract, siblings: Sequence[Contract],
                        usage: Mapping[str, MeteredUsage]) -> str | None:
    """The note on a contract's outcome naming its customer's usage sent with a `contract_id`
    that names no contract of the customer pricing its metric: only the contract it names
    reads tagged usage, so no run bills it. None when there is none.

    A metric no contract of the customer prices is `unpriced_usage`'s to name.
    """
    if not any(u.tagged for u in usage.values()):  # the common case, decided at once
        return None
    contracts = {c.contract_id: c for c in (contract, *siblings)}
    priced = {cid: metrics_priced([c]) for cid, c in contracts.items()}
    priced_by_any = set().union(*priced.values())
    found = []
    for metric, metered in sorted(usage.items()):
        if metric not in priced_by_any:
            continue
        for tag, events in sorted(metered.tagged.items()):
            if tag not in contracts:
                why = f"no contract {tag} of {contract.customer_id}"
            elif metric not in priced[tag]:
                why = f"{tag} does not price {metric}"
            else:
                continue
            found.append(f"{metric} sent with contract_id {tag} ({_plural(events, 'event')}; "
                         f"{why})")
    if not found:
        return None
    return (f"usage of {contract.customer_id} sent with a contract_id that names no contract "
            f"pricing it is not billed: {'; '.join(found)}")


def notes_warning(notes: Iterable[str | None], batch_id: str) -> str | None:
    """What a run says of one kind of note on its outcomes: the first, and how many more."""
    found = [n for n in notes if n]
    if not found:
        return None
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{found[0]}{more}; `billcycle batch show {batch_id}` names each contract"
