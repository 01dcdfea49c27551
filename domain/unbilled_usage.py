"""Usage the meters hold that no contract bills, said by every billing run instead of left
silent: usage of customers with no contract yet (billed once a contract of theirs prices it,
contract.md), usage of a metric that no contract of its customer prices, usage outside
the service of every contract that prices its metric, usage in periods between those that no
contract bills it for, and usage whose `contract_id` names no contract of its customer that
prices its metric. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, NamedTuple

from domain.billing import usage_windows
from domain.calendar import joined_spans, local_date
from domain.contract import Contract
from domain.usage import BUCKET, MeterRequest


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
    # Events found in the windows no contract bills (`unbilled_windows`), once they are read.
    in_unbilled_windows: tuple[tuple[UnbilledWindow, int], ...] = ()
    # The first bucket read when the usage before it was acknowledged as not to be billed
    # (domain/acknowledgements.py); the notes say so.
    read_from: datetime | None = None

    def acknowledged(self) -> str:
        """What a note adds of the usage left out as acknowledged ("" if none)."""
        if self.read_from is None:
            return ""
        return f"; usage before {self.read_from:%Y-%m-%d %H:%M} UTC acknowledged"


@dataclass(frozen=True)
class UnbilledWindow:
    """Instants [starts, ends) in which usage of `metric` sent with contract tag `tag` ("" for
    none) is billed by no contract of the customer, though some contract of theirs prices the
    metric before and after: between two contracts' services, in periods whose terms at their
    end do not price it (amended away, or not yet amended in), or outside the service of the
    contract the tag names. `why` says which. The spans before and after the service of
    every contract pricing the metric (`usage_outside_service`'s to name) are windows too,
    read for all of the metric's usage (`tag` None), so that its note can count them."""

    customer_id: str
    metric: str
    tag: str | None  # None: every tag, for the spans outside the service (read for counting)
    starts: datetime
    ends: datetime
    why: str


def metered_usage(
    rows: Iterable[tuple[str, str, str, int, datetime, datetime]],
    read_from: Mapping[tuple[str, str], datetime] | None = None,
) -> dict[str, dict[str, MeteredUsage]]:
    """Per customer and metric, the meters' totals per contract tag (customer, metric,
    contract_id or "", events, first and last bucket start) combined; `read_from`: where the
    rows of an acknowledged customer and metric were read from (`MeteredUsage.read_from`)."""
    read_from = read_from or {}
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
        metrics[metric] = MeteredUsage(events, first, last, tagged,
                                       read_from=read_from.get((customer_id, metric)))
    return found


def bounded_to(customer_ids: Iterable[str], since: Mapping[tuple[str, str], datetime] | None,
               ) -> dict[tuple[str, str], datetime]:
    """Of `since` (customer, metric -> the first bucket still read), these customers'."""
    if not since:
        return {}
    customers = set(customer_ids)
    return {key: instant for key, instant in since.items() if key[0] in customers}


def metrics_priced(contracts: Iterable[Contract]) -> frozenset[str]:
    """The metrics some version of these contracts prices."""
    return frozenset().union(*(c.usage_metrics() for c in contracts))


def unpriced_usage(contract: Contract, siblings: Sequence[Contract],
                   usage: Mapping[str, MeteredUsage]) -> str | None:
    """The note on a contract's outcome naming its customer's usage (per metric) that no
    contract of the customer prices, so that no run bills it; None when there is none."""
    priced = metrics_priced([contract, *siblings])
    unpriced = sorted((metric, u) for metric, u in usage.items() if metric not in priced)
    if not unpriced:
        return None
    listed = ", ".join(f"{metric} ({_plural(u.events, 'event')}{u.acknowledged()})"
                       for metric, u in unpriced)
    return (f"usage of {contract.customer_id} that no contract of theirs prices is not billed: "
            f"{listed}")


class _Service(NamedTuple):
    """A contract's service as instants: from local midnight of its start date to local
    midnight of its end date (None: no end), and the metrics it prices."""

    contract: Contract
    metrics: frozenset[str]
    starts: datetime
    ends: datetime | None

    @classmethod
    def of(cls, contract: Contract) -> _Service:
        return cls(contract, metrics_priced([contract]), *contract.service())


class _Outside(NamedTuple):
    """Where a metric's usage lies outside the service of every contract pricing it: before
    the earliest start (`before`), or from the latest end; `contract` is that start's or end's."""

    before: bool
    starts: datetime
    ends: datetime
    contract: Contract


def _span(pricing: Sequence[_Service]) -> tuple[_Service, _Service | None]:
    """Of the contracts pricing a metric, the one starting first and the one ending last
    (None when one of them has no end)."""
    first = min(pricing, key=attrgetter("starts"))
    ends = [s for s in pricing if s.ends is not None]
    return first, max(ends, key=attrgetter("ends")) if len(ends) == len(pricing) else None


def _outside_service(services: Sequence[_Service], metered: MeteredUsage,
                     metric: str) -> list[_Outside]:
    pricing = [s for s in services if metric in s.metrics]
    if not pricing:
        return []  # unpriced: `unpriced_usage` names it
    found = []
    first, last = _span(pricing)
    if metered.first_bucket < first.starts:
        found.append(_Outside(True, metered.first_bucket, first.starts, first.contract))
    if last is not None and last.ends is not None and metered.last_bucket >= last.ends:
        # From the end, or from the first bucket read when that is later (the usage before
        # it acknowledged: domain/acknowledgements.py).
        found.append(_Outside(False, max(last.ends, metered.first_bucket),
                              metered.last_bucket + BUCKET, last.contract))
    return found


def _inside_service(contracts: Sequence[Contract], usage: Mapping[str, MeteredUsage]) -> bool:
    """The common case, decided at once: one contract without an end, no usage before it."""
    if len(contracts) > 1 or contracts[0].end_date is not None:
        return False
    starts, _ = contracts[0].service()
    return all(u.first_bucket >= starts for u in usage.values())


def usage_outside_service(contract: Contract, siblings: Sequence[Contract],
                          usage: Mapping[str, MeteredUsage]) -> str | None:
    """The note on a contract's outcome naming its customer's usage of a priced metric that
    lies before the earliest start, or from the latest end, of the contracts pricing that
    metric: no period of theirs holds it, so no run bills it. None when there is none. With
    the events found there when the run has read them (`unbilled_windows`, every tag).

    Periods start at local midnight of `start_date` and the last ends at local midnight of
    `end_date` (contract.md, Periods and Termination); meter buckets are 15 minutes, and every
    timezone's offset today is a whole number of quarter hours, so a midnight is a bucket's
    edge.
    """
    contracts = [contract, *siblings]
    if _inside_service(contracts, usage):
        return None
    services = [_Service.of(c) for c in contracts]
    found = []
    for metric, metered in sorted(usage.items()):
        read = {(w.starts, w.ends): n for w, n in metered.in_unbilled_windows if w.tag is None}
        for o in _outside_service(services, metered, metric):
            events = read.get((o.starts, o.ends))
            counted = "" if events is None else (
                f" ({_plural(events, 'event')}{metered.acknowledged()})")
            if o.before:
                found.append(f"{metric} from {o.starts:%Y-%m-%d %H:%M} UTC{counted}, before "
                             f"service starts on {o.contract.start_date} "
                             f"({o.contract.contract_id})")
            else:
                found.append(f"{metric} until {o.ends:%Y-%m-%d %H:%M} UTC{counted}, after "
                             f"service ended on {o.contract.end_date} "
                             f"({o.contract.contract_id})")
    if not found:
        return None
    return (f"usage of {contract.customer_id} outside the service of the contracts pricing it "
            f"is not billed: {'; '.join(found)}")


def _without(extent: tuple[datetime, datetime], covered: Iterable[tuple[datetime, datetime]],
             ) -> list[tuple[datetime, datetime]]:
    """The parts of `extent` that no interval of `covered` (sorted, not overlapping) holds."""
    left, (start, end) = [], extent
    for s, e in covered:
        if e <= start or s >= end:
            continue
        if s > start:
            left.append((start, s))
        start = max(start, e)
    if start < end:
        left.append((start, end))
    return left


def _serving(services: Sequence[_Service], instant: datetime) -> list[str]:
    return [s.contract.contract_id for s in services
            if s.starts <= instant and (s.ends is None or instant < s.ends)]


def unbilled_windows(contracts: Sequence[Contract],
                     usage: Mapping[str, MeteredUsage]) -> list[UnbilledWindow]:
    """Where a customer's usage may lie that no contract of theirs bills: the windows to read
    the meters of. Inside the span from the earliest start to the latest end of the contracts
    pricing its metric, the holes between their windows, per tag (named by
    `usage_in_unbilled_windows`); outside that span, the spans the usage reaches before and
    after it, every tag at once (`tag` None: counted in `usage_outside_service`'s note).

    Untagged usage is billed in the windows of every contract pricing its metric (where two
    do, it is held instead, not lost); usage sent with a contract's id only in that contract's.
    A tag naming no contract pricing the metric is `misattributed_usage`'s to name. Only the
    span the metered usage reaches is looked at, so most customers ask for no read at all.
    """
    alike = len(contracts) == 1 and len({v.usage_metrics for v in contracts[0].versions}) == 1
    if alike and _inside_service(contracts, usage):
        return []  # the common case: one contract, the same metrics all along, no usage outside
    found: list[UnbilledWindow] = []
    services = [_Service.of(c) for c in contracts]
    customer_id = contracts[0].customer_id
    # Where a contract's service starts or ends, so that each window has one reason.
    edges = sorted({s.starts for s in services} | {s.ends for s in services if s.ends})
    for metric, metered in sorted(usage.items()):
        for o in _outside_service(services, metered, metric):
            found.append(UnbilledWindow(customer_id, metric, None, o.starts, o.ends, (
                f"before service starts on {o.contract.start_date}" if o.before
                else f"after service ended on {o.contract.end_date}")))
        pricing = [s for s in services if metric in s.metrics]
        if not pricing or alike:
            continue
        if len(pricing) == 1 and all(  # one contract pricing it all along: nothing to find
                metric in v.usage_metrics for v in pricing[0].contract.versions):
            continue
        first, last = _span(pricing)
        starts = max(metered.first_bucket, first.starts)
        ends = metered.last_bucket + BUCKET
        if last is not None and last.ends is not None:
            ends = min(ends, last.ends)
        if starts >= ends:
            continue
        windows = {
            s.contract.contract_id: usage_windows(
                s.contract, metric, local_date(ends - BUCKET, s.contract.timezone))
            for s in pricing
        }
        for tag in ["", *sorted(t for t in metered.tagged if t in windows)]:
            covered = windows[tag] if tag else sorted(w for ws in windows.values() for w in ws)
            for hole in _without((starts, ends), joined_spans(covered)):
                for hole_starts, hole_ends in _split(hole, edges):
                    found.append(UnbilledWindow(
                        customer_id, metric, tag, hole_starts, hole_ends,
                        _why_unbilled(tag, _serving(services, hole_starts), customer_id)))
    return found


def window_reads(windows: Sequence[UnbilledWindow],
                 usage: Mapping[str, Mapping[str, MeteredUsage]]) -> list[MeterRequest]:
    """The meter read of each window: its tag's usage, or for a span outside the service
    (`tag` None) every tag its metric was sent with (`usage`: per customer, as metered)."""
    return [MeterRequest(w.customer_id, w.metric, (w.tag,) if w.tag is not None else (
        "", *sorted(usage[w.customer_id][w.metric].tagged)), w.starts, w.ends, None)
        for w in windows]


def _split(window: tuple[datetime, datetime], edges: Sequence[datetime],
           ) -> list[tuple[datetime, datetime]]:
    """`window` cut at the `edges` (sorted) inside it."""
    start, end = window
    parts = []
    for edge in edges:
        if start < edge < end:
            parts.append((start, edge))
            start = edge
    return [*parts, (start, end)]


def _why_unbilled(tag: str, serving: Sequence[str], customer_id: str) -> str:
    if not serving:
        return f"no contract of {customer_id} serves then"
    if tag and tag not in serving:
        return f"{tag} does not serve then ({', '.join(serving)} does)"
    whose = tag or ", ".join(serving)
    return f"the terms of {whose} at the end of those periods do not price it"


def usage_in_unbilled_windows(contract: Contract, siblings: Sequence[Contract],
                              usage: Mapping[str, MeteredUsage]) -> str | None:
    """The note on a contract's outcome naming its customer's usage found in the windows no
    contract bills (`unbilled_windows`, read into `MeteredUsage.in_unbilled_windows`); None
    when there is none."""
    found = [
        f"{w.metric} from {w.starts:%Y-%m-%d %H:%M} to {w.ends:%Y-%m-%d %H:%M} UTC "
        f"({_plural(events, 'event')}"
        + (f" sent with contract_id {w.tag}" if w.tag else "")
        + f"; {w.why}{metered.acknowledged()})"
        for _, metered in sorted(usage.items())
        for w, events in metered.in_unbilled_windows if events and w.tag is not None
    ]
    if not found:
        return None
    return (f"usage of {contract.customer_id} in periods that no contract of theirs bills it "
            f"for is not billed: {'; '.join(found)}")


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
                         f"{why}{metered.acknowledged()})")
    if not found:
        return None
    return (f"usage of {contract.customer_id} sent with a contract_id that names no contract "
            f"pricing it is not billed: {'; '.join(found)}")


def notes_warning(notes: Iterable[str | None], batch_id: str, dry_run: bool = False
                  ) -> str | None:
    """What a run says of one kind of note on its outcomes: the first, and how many more."""
    found = [n for n in notes if n]
    if not found:
        return None
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    # A dry run keeps no batch to show.
    where = ("the real run's `billcycle batch show` names each contract" if dry_run else
             f"`billcycle batch show {batch_id}` names each contract")
    return f"{found[0]}{more}; {where}"
