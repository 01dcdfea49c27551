"""How a billing run reads usage: a chunk's meter reads planned and fetched in one round trip
(`MeterReads`), and each contract's view of them (`StoreUsage`): the usage it prices, with
untagged usage shared by several contracts held rather than guessed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from domain.billing import UsageNotBillable
from domain.contract import Contract
from domain.ports import BillingStore
from domain.terms import UsageComponent
from domain.usage import MeterReading, MeterRequest
from domain.usage_assignments import AssignedUsage


class MeterReads:
    """The meter reads of a chunk of contracts, fetched together in one round trip.

    A chunk is decided twice: first while planning, when every read is noted and answered with
    an empty reading, then after one `read_meters` has fetched them all. Billing is pure, so
    the second pass asks for the same reads; anything it asks that was not planned (late
    usage found only now) is read on its own.
    """

    def __init__(self, store: BillingStore) -> None:
        # Usage recorded before the chunk is decided is in its reads, wherever the store
        # keeps it until then: no invoice is priced from a meter that lags the log.
        store.update_meters()
        self.store = store
        self.planning = True
        self.wanted: dict[MeterRequest, None] = {}
        self.readings: dict[MeterRequest, MeterReading] = {}
        self.changes: dict[tuple[str, str, tuple[str, ...], int, datetime], list[datetime]] = {}

    def read(self, request: MeterRequest) -> MeterReading:
        found = self.readings.get(request)
        if found is not None:
            return found
        if self.planning:
            self.wanted[request] = None
            return MeterReading()
        return self.store.read_meter(
            request.customer_id, request.metric, request.contract_tags, request.start,
            request.end, request.unique_property, request.untagged_within)

    def changed(
        self, customer_id: str, metric: str, tags: tuple[str, ...], revision: int,
        before: datetime,
    ) -> list[datetime]:
        key = (customer_id, metric, tags, revision, before)
        if key not in self.changes:
            self.changes[key] = self.store.changed_buckets(
                customer_id, metric, tags, revision, before)
        return self.changes[key]

    def fetch(self) -> None:
        """Read everything planned, and answer from it from now on."""
        wanted = list(self.wanted)
        self.readings.update(zip(wanted, self.store.read_meters(wanted), strict=True))
        self.planning = False


class StoreUsage:
    """The usage one contract prices, read from the running meters."""

    def __init__(
        self,
        store: BillingStore,
        contract: Contract,
        siblings: Sequence[Contract],
        reads: MeterReads | None = None,
        assigned: AssignedUsage | None = None,
    ) -> None:
        self.contract = contract
        self.siblings = siblings
        self.assigned = assigned or {}
        self.reads = reads or MeterReads(store)
        if reads is None:
            self.reads.planning = False  # on its own: read each meter when asked

    def _rivals(self, metric: str, start: datetime, end: datetime) -> list[str]:
        """The customer's other contracts pricing the same metric and in service at some time
        in [start, end): untagged usage of then is theirs too. A renewal that starts later, or
        a contract that ended before, is not active then (contract.md: "two active
        contracts")."""
        return sorted(
            s.contract_id for s in self.siblings
            if s.contract_id != self.contract.contract_id
            and metric in s.usage_metrics()
            and _in_service_within(s, start, end)
        )

    def read(self, component: UsageComponent, start: datetime, end: datetime) -> MeterReading:
        c = self.contract
        tags: tuple[str, ...] = (c.contract_id, "")
        within: tuple[tuple[datetime, datetime], ...] = ()
        rivals = self._rivals(component.metric, start, end)
        if rivals and (untagged := self._untagged(component.metric, start, end)):
            tags = (c.contract_id,)
            within = self._assigned_to_me(component.metric, start, end, untagged, rivals)
            if within == ((start, end),):
                tags, within = (c.contract_id, ""), ()  # all of it: one plain read
        return self.reads.read(MeterRequest(
            c.customer_id, component.metric, tags, start, end, component.unique_property,
            within,
        ))

    def _untagged(self, metric: str, start: datetime, end: datetime) -> int:
        return self.reads.read(MeterRequest(
            self.contract.customer_id, metric, ("",), start, end, None)).event_count

    def _assigned_to_me(
        self, metric: str, start: datetime, end: datetime, untagged: int, rivals: list[str]
    ) -> tuple[tuple[datetime, datetime], ...]:
        """The windows of [start, end) whose untagged usage, which rival contracts price too,
        is this contract's by the operator's assignments (domain/usage_assignments.py):
        ((start, end),) when all of it is, () when none. A period may be shared (contracts in
        different timezones cut their periods at different instants): each contract bills the
        untagged usage of its own windows. Any left unassigned cannot be billed: it holds the
        invoice, naming where it lies."""
        c = self.contract
        mine: list[tuple[datetime, datetime]] = []
        others = 0
        assignments = self.assigned.get((c.customer_id, metric), ())
        for a in assignments:
            lo, hi = max(a.start, start), min(a.end, end)
            if lo < hi and (n := self._untagged(metric, lo, hi)):
                if a.contract_id == c.contract_id:
                    mine.append((lo, hi))
                    untagged -= n
                else:
                    others += n
        if untagged - others:
            raise UsageNotBillable(self._unassigned(
                metric, untagged - others, self._unassigned_spans(metric, start, end), rivals))
        if not others:
            return ((start, end),)
        return tuple(mine)

    def _unassigned_spans(
        self, metric: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime]]:
        """The spans of [start, end) outside every assignment that hold untagged usage."""
        spans, at = [], start
        for a in self.assigned.get((self.contract.customer_id, metric), ()):
            if a.start > at and at < end:
                spans.append((at, min(a.start, end)))
            at = max(at, a.end)
        if at < end:
            spans.append((at, end))
        return [(lo, hi) for lo, hi in spans if self._untagged(metric, lo, hi)]

    def _unassigned(self, metric: str, count: int, spans: list[tuple[datetime, datetime]],
                    rivals: list[str]) -> str:
        c = self.contract
        where = ", ".join(f"from {lo:%Y-%m-%d %H:%M} to {hi:%Y-%m-%d %H:%M}" for lo, hi in spans)
        return (
            f"{count} usage event{' carries' if count == 1 else 's carry'} no contract_id: "
            f"{metric} for customer {c.customer_id} {where} UTC, and contracts "
            f"{', '.join([c.contract_id, *rivals])} all price {metric}; producers must send "
            f"contract_id for this customer's usage, and `billcycle usage assign --customer "
            f"{c.customer_id} --metric {metric} --contract CONTRACT_ID --from ... --to ... "
            "--reason ...` says whose the usage already sent is"
        )

    def changed_since(self, metric: str, revision: int, before: datetime) -> list[datetime]:
        # Untagged usage always counts as a change: whether it is this contract's depends on
        # the period (see _rivals), and `read` of that period decides, or holds it.
        return self.reads.changed(
            self.contract.customer_id, metric, (self.contract.contract_id, ""), revision,
            before)


def _in_service_within(contract: Contract, start: datetime, end: datetime) -> bool:
    """Whether the contract's service (`Contract.service`) overlaps [start, end)."""
    starts, ends = contract.service()
    return starts < end and (ends is None or ends > start)
