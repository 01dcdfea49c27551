"""How a billing run reads usage: a chunk's meter reads planned and fetched in one round trip
(`MeterReads`), and each contract's view of them (`StoreUsage`): the usage it prices, with
untagged usage shared by several contracts held rather than guessed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import pairwise

from domain.billing import UsageNotBillable, usage_windows
from domain.calendar import joined_spans, local_date
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

    def _rivals(self, metric: str, start: datetime, end: datetime) -> list[Rival]:
        """The customer's other contracts pricing the same metric at some time in [start,
        end), each with the spans it bills the metric's usage of (`usage_windows`: in service,
        and priced by the terms at its period's end): untagged usage of then may be theirs
        too. A renewal that starts later, a contract that ended before, or one amended to
        price the metric only later is not active then (contract.md: "two active contracts
        pricing the same metric")."""
        found = []
        for s in self.siblings:
            if (s.contract_id == self.contract.contract_id or metric not in s.usage_metrics()
                    or not _in_service_within(s, start, end)):
                continue
            spans = [(lo, hi) for lo, hi in usage_windows(s, metric, local_date(end, s.timezone))
                     if lo < end and start < hi]
            if spans:
                found.append(Rival(s.contract_id, spans))
        return sorted(found, key=lambda r: r.contract_id)

    def read(self, component: UsageComponent, start: datetime, end: datetime) -> MeterReading:
        c = self.contract
        tags: tuple[str, ...] = (c.contract_id, "")
        within: tuple[tuple[datetime, datetime], ...] = ()
        rivals = self._rivals(component.metric, start, end)
        if rivals and self._untagged(component.metric, start, end):
            pieces = self._owners(component.metric, start, end, rivals)
            self._hold_unassigned(component.metric, pieces, rivals)
            mine = joined_spans((lo, hi) for lo, hi, owner in pieces if owner == c.contract_id)
            if mine != [(start, end)]:
                tags, within = (c.contract_id,), tuple(mine)
        reading = self.reads.read(MeterRequest(
            c.customer_id, component.metric, tags, start, end, component.unique_property,
            within,
        ))
        # Said on the line (its basis), so that a shared period's reads can be explained.
        return reading if "" in tags else replace(reading, untagged_within=within)

    def _untagged(self, metric: str, start: datetime, end: datetime) -> int:
        return self.reads.read(MeterRequest(
            self.contract.customer_id, metric, ("",), start, end, None)).event_count

    def _owners(
        self, metric: str, start: datetime, end: datetime, rivals: list[Rival]
    ) -> list[tuple[datetime, datetime, str | None]]:
        """[start, end) in pieces, each with the contract whose untagged usage it is: this
        contract where no rival prices the metric (the only active one), else the contract
        the operator assigned it to (domain/usage_assignments.py) if that one prices it then;
        None where none is (the usage holds). A period may so be shared: contracts in
        different timezones cut their periods at different instants, and a rival's service
        or pricing of the metric may start or end within it."""
        c = self.contract
        assignments = [a for a in self.assigned.get((c.customer_id, metric), ())
                       if a.start < end and start < a.end]
        edges = [t for r in rivals for span in r.spans for t in span]
        edges += [t for a in assignments for t in (a.start, a.end)]
        cuts = sorted({start, end} | {t for t in edges if start < t < end})
        pieces: list[tuple[datetime, datetime, str | None]] = []
        for lo, hi in pairwise(cuts):
            active = {c.contract_id} | {r.contract_id for r in rivals
                                        if any(s <= lo < e for s, e in r.spans)}
            owner: str | None = c.contract_id
            if len(active) > 1:
                given = next((a.contract_id for a in assignments if a.start <= lo < a.end), None)
                owner = given if given in active else None
            pieces.append((lo, hi, owner))
        return pieces

    def _hold_unassigned(self, metric: str, pieces: list[tuple[datetime, datetime, str | None]],
                         rivals: list[Rival]) -> None:
        """Untagged usage where two contracts are active and none is assigned it cannot be
        billed: it holds the invoice, naming where it lies."""
        nobodys = joined_spans((lo, hi) for lo, hi, owner in pieces if owner is None)
        spans = [(lo, hi, n) for lo, hi in nobodys if (n := self._untagged(metric, lo, hi))]
        if not spans:
            return
        c, count = self.contract, sum(n for _, _, n in spans)
        where = ", ".join(f"from {lo:%Y-%m-%d %H:%M} to {hi:%Y-%m-%d %H:%M}" for lo, hi, _ in spans)
        raise UsageNotBillable(
            f"{count} usage event{' carries' if count == 1 else 's carry'} no contract_id: "
            f"{metric} for customer {c.customer_id} {where} UTC, and contracts "
            f"{', '.join([c.contract_id, *(r.contract_id for r in rivals)])} all price "
            f"{metric}; producers must send contract_id for this customer's usage, and "
            f"`billcycle usage assign --customer {c.customer_id} --metric {metric} --contract "
            "CONTRACT_ID --from ... --to ... --reason ...` says whose the usage already sent is"
        )

    def changed_since(self, metric: str, revision: int, before: datetime) -> list[datetime]:
        # Untagged usage always counts as a change: whether it is this contract's depends on
        # the period (see _rivals), and `read` of that period decides, or holds it.
        return self.reads.changed(
            self.contract.customer_id, metric, (self.contract.contract_id, ""), revision,
            before)


@dataclass(frozen=True)
class Rival:
    """Another contract of the customer pricing a metric, and the spans it bills that
    metric's usage of."""

    contract_id: str
    spans: list[tuple[datetime, datetime]]


def _in_service_within(contract: Contract, start: datetime, end: datetime) -> bool:
    """Whether the contract's service (`Contract.service`) overlaps [start, end)."""
    starts, ends = contract.service()
    return starts < end and (ends is None or ends > start)
