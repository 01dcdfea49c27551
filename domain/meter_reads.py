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
            request.end, request.unique_property)

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
        rivals = self._rivals(component.metric, start, end)
        untagged_is_mine = not rivals
        if rivals:
            untagged = self._untagged(component.metric, start, end)
            if untagged:
                untagged_is_mine = self._assigned_to_me(component.metric, start, end, untagged,
                                                        rivals)
        tags = (c.contract_id, "") if untagged_is_mine else (c.contract_id,)
        return self.reads.read(MeterRequest(
            c.customer_id, component.metric, tags, start, end, component.unique_property,
        ))

    def _untagged(self, metric: str, start: datetime, end: datetime) -> int:
        return self.reads.read(MeterRequest(
            self.contract.customer_id, metric, ("",), start, end, None)).event_count

    def _assigned_to_me(
        self, metric: str, start: datetime, end: datetime, untagged: int, rivals: list[str]
    ) -> bool:
        """Whether the untagged usage of [start, end), which rival contracts price too, is
        this contract's by the operator's assignments (domain/usage_assignments.py): all of
        it (True) or none (False). Any left unassigned, or split between contracts within
        the period read, cannot be billed: it holds the invoice."""
        c = self.contract
        owners: dict[str, int] = {}
        for a in self.assigned.get((c.customer_id, metric), ()):
            lo, hi = max(a.start, start), min(a.end, end)
            if lo < hi and (n := self._untagged(metric, lo, hi)):
                owners[a.contract_id] = owners.get(a.contract_id, 0) + n
        span = f"from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
        unassigned = untagged - sum(owners.values())
        if unassigned:
            raise UsageNotBillable(
                f"{unassigned} usage event{' carries' if unassigned == 1 else 's carry'} no "
                f"contract_id: {metric} for customer {c.customer_id} {span}, and contracts "
                f"{', '.join([c.contract_id, *rivals])} "
                f"all price {metric}; producers must send contract_id for this customer's "
                f"usage, and `billcycle usage assign --customer {c.customer_id} --metric "
                f"{metric} --contract CONTRACT_ID --from ... --to ... --reason ...` says whose "
                "the usage already sent is"
            )
        if len(owners) > 1:
            raise UsageNotBillable(
                f"the untagged usage of {metric} for customer {c.customer_id} {span} is "
                f"assigned to {', '.join(sorted(owners))}: one period's untagged usage is "
                "billed by one contract; give the whole period to one of them "
                "(`billcycle usage assign` with the same window replaces an assignment)"
            )
        return c.contract_id in owners

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
