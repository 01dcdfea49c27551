"""The billing application: ingest commands and queries over the event-sourced aggregates.

Persistence is chosen by environment (see infra/store): SQLite embedded or PostgreSQL. The
billing run itself lives in `domain.billing_runs`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    JSONTranscoder,
    Tracking,
    Transcoder,
    Transcoding,
)
from eventsourcing.utils import get_topic

from domain.acknowledgements import (
    ACKNOWLEDGEMENTS_ID,
    Acknowledgement,
    UsageAcknowledgements,
)
from domain.billing_run import BillingRun
from domain.calendar import local_midnight, period_containing
from domain.commands import (
    AmendContract,
    Command,
    CompleteMilestone,
    CreateContract,
    DeclareWatermark,
    Origin,
    PayRefund,
    ReceivePayment,
    RecordUsage,
    Rejected,
    TerminateContract,
)
from domain.contract import (
    Contract,
    ContractRuleViolation,
    contract_aggregate_id,
    counted_properties,
    later_end_note,
    retroactive_change_note,
)
from domain.inbox import (
    WATERMARKS_ID,
    DeadLetter,
    MessageReceipt,
    Retirement,
    UsageWatermarks,
    dead_letter_id,
    reactivation_note,
    watermark_note,
)
from domain.invoice import (
    INVOICE_NUMBERS_ID,
    Invoice,
    InvoiceNumbers,
    PaymentRejected,
    invoice_aggregate_id,
    invoice_number,
)
from domain.ports import BillingStore
from domain.reasons import first_line, shown_id
from domain.transcoding import FastJSONTranscoder
from domain.usage import (
    COUNTED_PROPERTIES,
    UsageBatch,
    UsageRecord,
    usage_record,
)
from domain.usage_assignments import (
    ASSIGNMENTS_ID,
    AssignmentChange,
    AssignmentRejected,
    UsageAssignment,
    UsageAssignments,
)

A = TypeVar("A", bound=Aggregate)
# The aggregates the operator changes: registers, and the watermarks (a source retired).
R = TypeVar("R", UsageAcknowledgements, UsageAssignments, UsageWatermarks)
T = TypeVar("T")

MAX_SAVE_ATTEMPTS = 8


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


class ConcurrentUpdate(RuntimeError):
    """Another writer changed the same aggregates again and again; try again later."""


@dataclass
class IngestReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    # Accepted messages an operator should look at (a payment beyond what it settles).
    notes: list[str] = field(default_factory=list)

    def add(self, other: IngestReport) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected.extend(other.rejected)
        self.notes.extend(other.notes)


class BillingApplication(Application[UUID]):
    name = "billcycle"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        InvoiceNumbers: 100, UsageWatermarks: 100, UsageAcknowledgements: 100,
    }

    def construct_transcoder(self) -> Transcoder:
        # The library's JSON transcoder, but for a faster decode of the same objects (a
        # replay decodes every invoice); another transcoder chosen by TRANSCODER_TOPIC stays.
        transcoder = self.factory.transcoder()
        if type(transcoder) is JSONTranscoder:
            transcoder = FastJSONTranscoder()
        if isinstance(transcoder, JSONTranscoder):
            self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsISO())

    def save_tracked(
        self,
        *aggregates: Aggregate,
        tracking: Tracking | None,
        events: Sequence[Any] = (),
        **kwargs: Any,
    ) -> None:
        """Save aggregates and bare new events with the input position they came from.

        One transaction. Events are collected here rather than by the library's
        `collect_events`, whose runtime protocol checks cost more than the insert itself.
        """
        processing = ProcessingEvent[UUID](tracking=tracking)
        for aggregate in aggregates:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        processing.events.extend(events)
        processing.saved_kwargs.update(kwargs)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)

    def _record(self, processing_event: ProcessingEvent[UUID]) -> Any:
        # Every save, the library's and save_tracked: a contract event that counts a usage
        # property's distinct values tells the store in the same transaction, which keeps
        # distinct values only of counted properties (and backfills a newly counted one).
        counted = counted_properties(processing_event.events)
        if counted:
            processing_event.saved_kwargs[COUNTED_PROPERTIES] = sorted(counted)
        return super()._record(processing_event)

    @property
    def store(self) -> BillingStore:
        return cast(BillingStore, self.recorder)

    def update_meters(self, most: int | None = None) -> int:
        """Fold recorded usage still in the store's meter backlog into the meters."""
        return self.store.update_meters(most)

    # --- ingest -----------------------------------------------------------------------------

    def ingest(
        self,
        commands: Sequence[tuple[Command, Origin]],
        rejected: Sequence[Rejected] = (),
        tracking: Tracking | None = None,
    ) -> IngestReport:
        """Apply a batch of accepted messages in one transaction, with its tracking position.

        Duplicates (same id, same content) are counted and skipped; conflicting duplicates
        and messages the domain refuses become dead letters in the same transaction.
        """
        try:
            return self._ingest(commands, rejected, tracking)
        except DataError:
            if not commands:
                raise
            return self._ingest_around_refusals(commands, rejected, tracking)

    def _ingest_around_refusals(
        self,
        commands: Sequence[tuple[Command, Origin]],
        rejected: Sequence[Rejected],
        tracking: Tracking | None,
    ) -> IngestReport:
        """The batch applied a part at a time, halving the parts the store refuses (a value it
        cannot hold that validation let through), down to the messages that carry one: those
        become dead letters. Raised instead, the same batch would stop ingest for good.

        The parts commit one by one, without the batch's position, which goes last with the
        dead letters: after a crash the batch is read again and the parts already applied are
        duplicates (a message id counts once ever), so nothing is applied twice.
        """
        report = IngestReport()
        refused: list[Rejected] = []
        parts = [list(commands)]  # a stack: the first part of the input on top
        while parts:
            part = parts.pop()
            try:
                report.add(self._ingest(part, (), None))
            except DataError as error:
                if len(part) > 1:
                    half = len(part) // 2
                    parts += [part[half:], part[:half]]
                    continue
                [(command, origin)] = part
                refused.append(Rejected(origin, (
                    f"{named(command)}: the store "
                    f"cannot hold a value of this message ({first_line(error)}); billcycle's "
                    "checks should have refused it: report it with this dead letter, and send "
                    "the message again, corrected"), command.message_id))
        report.add(self._ingest((), [*rejected, *refused], tracking))
        return report

    def _ingest(
        self,
        commands: Sequence[tuple[Command, Origin]],
        rejected: Sequence[Rejected],
        tracking: Tracking | None,
    ) -> IngestReport:
        for _ in range(MAX_SAVE_ATTEMPTS):
            unit = _IngestUnit(self)
            report = unit.apply(commands, rejected)
            try:
                unit.save(tracking)
            except IntegrityError:
                if tracking is not None and self._position_taken(tracking):
                    raise ConcurrentUpdate(
                        f"input position {tracking.application_name} "
                        f"{tracking.notification_id} is already recorded: another process "
                        "applied this batch; reread the position and go on from there"
                    ) from None
                # Another writer got there first (a contract, the watermarks, a message id):
                # reload and apply again; duplicates are then recognised as such.
                continue
            return report
        raise ConcurrentUpdate(
            f"ingest batch of {len(commands)} messages conflicted {MAX_SAVE_ATTEMPTS} times "
            "with other writers; it was not applied, try again"
        )

    def _position_taken(self, tracking: Tracking) -> bool:
        recorder: Any = self.recorder
        stored = recorder.max_tracking_id(tracking.application_name)
        return stored is not None and stored >= tracking.notification_id

    # --- queries ----------------------------------------------------------------------------

    def get_or_none(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        try:
            return cast(A, self.repository.get(aggregate_id))
        except AggregateNotFoundError:
            return None

    def contract_timezone(self, contract_id: str) -> str:
        """The timezone a contract's documents are dated in, as the ledger dates their money:
        set when the contract was created and never changed, so read from its first event;
        UTC where the contract is not in the store."""
        try:
            created: Contract = self.repository.get(contract_aggregate_id(contract_id),
                                                    version=Contract.INITIAL_VERSION)
        except AggregateNotFoundError:
            return "UTC"
        return created.timezone

    def load_many(self, aggregate_ids: Sequence[UUID]) -> dict[UUID, Aggregate]:
        """Reconstruct many aggregates from one read of their events (none snapshotted)."""
        loaded: dict[UUID, Aggregate] = {}
        for originator_id, stored in self.store.events_of(aggregate_ids).items():
            aggregate: Any = None
            for record in stored:
                event: Any = self.mapper.to_domain_event(record)
                aggregate = event.mutate(aggregate)
            if aggregate is not None:
                loaded[originator_id] = aggregate
        return loaded

    def contracts(self, contract_ids: Sequence[str]) -> dict[str, Contract]:
        """The stored contracts among these ids, by contract id."""
        loaded = self.load_many([contract_aggregate_id(cid) for cid in contract_ids])
        return {c.contract_id: c for c in loaded.values() if isinstance(c, Contract)}

    def contract(self, contract_id: str) -> Contract | None:
        return self.get_or_none(contract_aggregate_id(contract_id), Contract)

    def invoice(self, number: str) -> Invoice | None:
        return self.get_or_none(invoice_aggregate_id(number), Invoice)

    def issued_count(self) -> int:
        numbers = self.get_or_none(INVOICE_NUMBERS_ID, InvoiceNumbers)
        return 0 if numbers is None else numbers.issued

    def invoices(self) -> Iterator[Invoice]:
        """Every invoice in issue order."""
        for sequence in range(1, self.issued_count() + 1):
            invoice = self.invoice(invoice_number(sequence))
            if invoice is not None:
                yield invoice

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, in the order it was rejected."""
        fields = ("position", "source", "at", "message_id", "reason", "raw", "raw_encoding")
        return [
            {name: getattr(rejected, name) for name in fields}
            for rejected in self._indexed(DeadLetter.Rejected)  # type: ignore[attr-defined]
        ]

    def batches(self, cycle_date: date) -> list[BillingRun]:
        """The batches (billing runs) of a cycle date, in the order they started."""
        started = [e.originator_id for e in self._batch_starts() if e.cycle_date == cycle_date]
        return [run for run_id in started
                if (run := self.get_or_none(run_id, BillingRun)) is not None]

    def later_batches(self, cycle_date: date) -> list[tuple[str, date]]:
        """The batches started for a cycle date after `cycle_date`, as (batch id, cycle date),
        by date then id."""
        return sorted(((e.batch_id, e.cycle_date) for e in self._batch_starts()
                       if e.cycle_date > cycle_date), key=lambda b: (b[1], b[0]))

    def _batch_starts(self) -> Iterator[Any]:
        """Every batch's `BillingRun.Started` event, in log order."""
        return self._indexed(BillingRun.Started)  # type: ignore[attr-defined]

    def _indexed(self, event_class: type[Any]) -> Iterator[Any]:
        """Every stored event of one class whose topic the store indexes (INDEXED_TOPICS), in
        log order (read through its index, not by a scan of the log)."""
        return map(self.mapper.to_domain_event, self.store.indexed_events(get_topic(event_class)))

    def watermarks(self) -> UsageWatermarks | None:
        return self.get_or_none(WATERMARKS_ID, UsageWatermarks)

    def retire_watermark_source(self, metric: str, source: str, reason: str, by: str,
                                at: datetime) -> Retirement:
        """Record that `source` bounds `metric`'s completeness no more (a producer
        decommissioned, or one sent by mistake), and who retired it, when and why."""
        return self._change_register(
            WATERMARKS_ID, UsageWatermarks, "retirement",
            lambda marks: (marks.retire(metric, source, reason, by, at), []))

    def usage_acknowledgements(self) -> list[Acknowledgement]:
        """The acknowledgements of unbilled usage in force (domain/acknowledgements.py)."""
        given = self.get_or_none(ACKNOWLEDGEMENTS_ID, UsageAcknowledgements)
        return given.in_force() if given else []

    def knows_customer(self, customer_id: str) -> bool:
        """Whether a contract, or usage in the meters, names the customer (usage still in the
        meter backlog does not count)."""
        return bool(self.store.customer_contract_ids([customer_id])
                    or self.store.metered_usage([customer_id]))

    def acknowledge_usage(self, customer_id: str, metric: str, through: datetime, reason: str,
                          by: str, at: datetime) -> Acknowledgement:
        """Record that the customer's usage of the metric before `through` is not to be
        billed, and why: runs stop naming it (their notes read the meters from there on)."""
        return self._change_register(
            ACKNOWLEDGEMENTS_ID, UsageAcknowledgements, "acknowledgement",
            lambda given: (given.acknowledge(customer_id, metric, through, reason, by, at), []))

    def withdraw_usage_acknowledgement(self, customer_id: str, metric: str, reason: str,
                                       by: str, at: datetime) -> Acknowledgement:
        """Take back the acknowledgement of the customer's usage of the metric: runs name all
        of that usage again."""
        return self._change_register(
            ACKNOWLEDGEMENTS_ID, UsageAcknowledgements, "withdrawal",
            lambda given: (given.withdraw(customer_id, metric, reason, by, at), []))

    def usage_assignments(self) -> list[UsageAssignment]:
        """Untagged usage assigned to a contract (domain/usage_assignments.py)."""
        given = self.get_or_none(ASSIGNMENTS_ID, UsageAssignments)
        return given.in_force() if given else []

    def assign_usage(self, customer_id: str, metric: str, contract_id: str,
                     start: date | datetime, end: date | datetime, reason: str, by: str,
                     at: datetime) -> AssignmentChange:
        """Record that the customer's untagged usage of the metric in [start, end) is the
        contract's (a date: local midnight in the contract's timezone). Given again to another
        contract after either invoiced it: both price those periods again."""
        contract = self.contract(contract_id)
        if contract is None:
            raise AssignmentRejected(
                f"no contract {contract_id} in this store; check the id (the held outcome in "
                "`billcycle batch show` names the contracts pricing the usage)")
        if contract.customer_id != customer_id:
            raise AssignmentRejected(
                f"contract {contract_id} is customer {contract.customer_id}'s, not "
                f"{customer_id}'s; assign usage to one of the customer's own contracts")

        def instant(value: date | datetime) -> datetime:
            if isinstance(value, datetime):
                return value
            return local_midnight(value, contract.timezone)

        first, last = instant(start), instant(end)
        if not first < last:  # said as given: the aggregate sees only the UTC instants
            raise AssignmentRejected(
                f"the window --from {start.isoformat()} --to {end.isoformat()} is empty or "
                f"reversed (a date is local midnight of {contract_id}, in {contract.timezone}); "
                "give a --from before the --to")

        def assign(given: UsageAssignments) -> tuple[AssignmentChange, list[Contract]]:
            window = (first.astimezone(UTC), last.astimezone(UTC))
            replaced = [a.contract_id for a in given.of(customer_id, metric)
                        if (a.start, a.end) == window]
            assigned = given.assign(contract, metric, first, last, reason, by, at)
            return self._reprice(assigned, [contract_id, *replaced])

        return self._change_register(ASSIGNMENTS_ID, UsageAssignments, "assignment", assign)

    def withdraw_usage_assignment(self, customer_id: str, metric: str, start: date | datetime,
                                  contract_id: str | None = None) -> AssignmentChange:
        """Take back an assignment, named by the start of its window (a date: local midnight
        in its contract's timezone) and, where that is not enough, by its contract. Where its
        contract invoiced the usage, it prices those periods again: held until the usage is
        assigned anew."""
        def instant(found: list[UsageAssignment]) -> datetime:
            if contract_id is not None:
                found = [a for a in found if a.contract_id == contract_id]
            if isinstance(start, datetime):
                return start
            contracts = self.contracts(sorted({a.contract_id for a in found}))
            starting = [a for a in found if a.contract_id in contracts and a.start
                        == local_midnight(start, contracts[a.contract_id].timezone)]
            if len(starting) > 1:  # the same date is another instant in another timezone
                raise AssignmentRejected(
                    f"{len(starting)} assignments of {customer_id}'s untagged {metric} start "
                    f"on {start.isoformat()}, each at its contract's local midnight: "
                    + ", ".join(f"{a.contract_id}'s from {a.start.astimezone(UTC).isoformat()}"
                                for a in starting)
                    + "; say which with --contract CONTRACT_ID, or give --from as an instant")
            return starting[0].start if starting else local_midnight(start, "UTC")

        def withdraw(given: UsageAssignments) -> tuple[AssignmentChange, list[Contract]]:
            taken = given.withdraw(customer_id, metric, instant(given.of(customer_id, metric)),
                                   contract_id)
            return self._reprice(taken, [taken.contract_id], withdrawn=True)

        return self._change_register(ASSIGNMENTS_ID, UsageAssignments, "withdrawal", withdraw)

    def _reprice(self, change: UsageAssignment, contract_ids: list[str],
                 withdrawn: bool = False) -> tuple[AssignmentChange, list[Contract]]:
        """The contracts an assignment change reaches, each told of it: what they invoiced of
        the window is priced again at their next run (the one that billed it is credited, the
        one it is given to bills it). Saved with the change, so a run that decided them with
        the assignments before it cannot save its invoices (their versions moved on)."""
        # Every contract of the customer pricing the metric: one may have billed the window's
        # untagged usage as the only one pricing it then (before a rival was created).
        customer = self.store.customer_contract_ids([change.customer_id]).get(
            change.customer_id, [])
        found = {cid: c for cid, c in self.contracts(sorted({*contract_ids, *customer})).items()
                 if cid in contract_ids or change.metric in c.usage_metrics()}
        for contract in found.values():
            contract.assignment_changed(change.metric, change.start,
                                        None if withdrawn else change.contract_id, change.reason)
        # Named: those whose invoices billed usage of the window, priced again with a change.
        repriced = tuple(sorted(
            cid for cid, c in found.items()
            if c.invoiced_usage_within(change.metric, change.start, change.end)))
        return AssignmentChange(change, repriced), list(found.values())

    def _change_register(self, register_id: UUID, kind: type[R], what: str,
                         change: Callable[[R], tuple[T, list[Contract]]]) -> T:
        """Change one of the operator's registers (one aggregate each: acknowledgements,
        assignments, the watermarks' retired sources), read again and changed again where
        another was saved meanwhile; with the contracts the change reached, in the same
        transaction."""
        for _ in range(MAX_SAVE_ATTEMPTS):
            register = self.get_or_none(register_id, kind) or kind()
            result, reached = change(register)
            try:
                self.save(register, *reached)
            except IntegrityError:  # another saved meanwhile: read it, again
                continue
            return result
        raise ConcurrentUpdate(
            f"the {what} conflicted {MAX_SAVE_ATTEMPTS} times with others given at the same "
            "moment; it was not recorded, try again")


def dead_letter_record(rejection: Rejected) -> dict[str, Any]:
    raw = rejection.origin.raw
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return {
        "position": rejection.origin.key,
        "source": rejection.origin.source,
        "at": rejection.origin.position,
        "message_id": rejection.message_id,
        "reason": rejection.reason,
        "raw": text,
        "raw_encoding": encoding,
    }


class _IngestUnit:
    """One attempt at applying an ingest batch: the aggregates it touches, saved together."""

    def __init__(self, app: BillingApplication) -> None:
        self.app = app
        self.aggregates: dict[UUID, Aggregate] = {}
        self.loaded: dict[UUID, Aggregate] = {}  # prefetched in one read
        self.usage: list[UsageRecord] = []  # recorded as one UsageBatch event
        self.received: list[tuple[str, str]] = []  # (message id, fingerprint) accepted
        self.new_contracts: list[tuple[str, str]] = []
        # Contracts whose pricing changed, from when, and the metrics they priced before or
        # after (an amendment may replace the only terms that priced one): for their rivals.
        self.changed: list[tuple[Contract, datetime, frozenset[str]]] = []
        self.dead: list[Rejected] = []
        self.notes: list[str] = []  # on accepted messages (IngestReport.notes)

    def _note(self, note: str | None) -> None:
        if note:
            self.notes.append(note)

    def apply(
        self, commands: Sequence[tuple[Command, Origin]], rejected: Sequence[Rejected]
    ) -> IngestReport:
        report = IngestReport()
        self.dead.extend(rejected)
        known = self._known_fingerprints([c.message_id for c, _ in commands])
        self.loaded = self.app.load_many(_referenced(c for c, _ in commands))
        for command, origin in commands:
            seen = known.get(command.message_id)
            if seen is not None:
                if seen == command.fingerprint:
                    report.duplicates += 1
                else:
                    self.dead.append(Rejected(
                        origin,
                        f"{named(command)}: conflicting duplicate: "
                        "this id was already received with different content; a new message "
                        "needs a new id",
                        command.message_id,
                    ))
                continue
            try:
                self._apply(command)
            except (ContractRuleViolation, PaymentRejected, LookupError) as exc:
                # The message named once, here, whichever rule of which aggregate refused it.
                self.dead.append(Rejected(origin, f"{named(command)}: {exc}",
                                          command.message_id))
                continue
            known[command.message_id] = command.fingerprint
            self.received.append((command.message_id, command.fingerprint))
            report.accepted += 1
        self._tell_rivals()
        # As the input had them (each stage of ingest rejects its own, so they are found out
        # of order): the dead letters are kept, and listed, in that order.
        self.dead.sort(key=lambda r: r.origin.order)
        self._keep_dead_letters()
        report.rejected = list(self.dead)
        report.notes = list(self.notes)
        return report

    def _keep_dead_letters(self) -> None:
        records = {dead_letter_id(r["position"], r["raw"]): r
                   for r in map(dead_letter_record, self.dead)}
        for kept in self.app.store.first_versions(list(records)):
            records.pop(kept)  # the same input rejected before: kept once
        for record in records.values():
            self._keep(DeadLetter(**record))

    def save(self, tracking: Tracking | None) -> None:
        # The received message ids go into the store's table in the same transaction: its
        # primary key refuses an id that another writer committed meanwhile (IntegrityError,
        # and `ingest` applies the batch again), so an id counts once ever.
        self.app.save_tracked(
            *self.aggregates.values(),
            tracking=tracking,
            events=[UsageBatch.recorded(self.usage)] if self.usage else (),
            contracts=self.new_contracts,
            messages=self.received,
        )

    def _known_fingerprints(self, message_ids: list[str]) -> dict[str, str]:
        return self.app.store.received_messages(message_ids)

    def _get(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        if aggregate_id in self.aggregates:
            return cast(A, self.aggregates[aggregate_id])
        found: A | None
        if aggregate_id in self.loaded:
            found = cast(A, self.loaded[aggregate_id])
        elif kind in (Contract, Invoice):
            found = None  # prefetched: absent from the store
        else:
            found = self.app.get_or_none(aggregate_id, kind)
        if found is not None:
            self.aggregates[aggregate_id] = found
        return found

    def _keep(self, aggregate: Aggregate) -> None:
        self.aggregates[aggregate.id] = aggregate

    def _contract(self, contract_id: str, command: Command) -> Contract:
        contract = self._get(contract_aggregate_id(contract_id), Contract)
        if contract is None:
            raise LookupError(f"unknown contract {contract_id}; send contract.created for it first")
        return contract

    def _tell_rivals(self) -> None:
        """Each contract amended or terminated in the batch tells the customer's other
        contracts pricing one of its metrics: what it prices changed from an instant, so
        untagged usage of then may now be theirs (only one contract prices it) or contested
        (two), and each prices its invoiced periods from that day again. In one read of the
        customers' contracts for the whole batch."""
        earliest: dict[str, tuple[Contract, datetime, frozenset[str]]] = {}
        for c, since, metrics in self.changed:
            if c.contract_id in earliest:
                _, was, priced = earliest[c.contract_id]
                since, metrics = min(since, was), metrics | priced
            if metrics:
                earliest[c.contract_id] = (c, since, metrics)
        changed = list(earliest.values())
        if not changed:
            return
        ids = self.app.store.customer_contract_ids(
            sorted({c.customer_id for c, _, _ in changed}))
        others = {contract_aggregate_id(cid) for cids in ids.values() for cid in cids}
        missing = [i for i in others if i not in self.aggregates and i not in self.loaded]
        self.loaded.update(self.app.load_many(missing))
        for contract, since, metrics in changed:
            for cid in ids.get(contract.customer_id, []):
                rival = self._get(contract_aggregate_id(cid), Contract)
                if (rival is not None and rival.contract_id != contract.contract_id
                        and rival.usage_metrics() & metrics):
                    rival.rival_changed(contract.contract_id, since)

    def _receipt(self, command: Command) -> None:
        self._keep(MessageReceipt(
            message_id=command.message_id,
            message_type=command.message_type,
            fingerprint=command.fingerprint,
        ))

    def _apply(self, command: Command) -> None:
        match command:
            case RecordUsage():
                self.usage.append(usage_record(
                    command.message_id, command.fingerprint, command.customer_id, command.metric,
                    command.quantity, command.occurred_at, command.properties_json,
                    command.contract_id, command.occurred_at_iso,
                ))
                return
            case CreateContract():
                terms = command.terms
                if self._get(contract_aggregate_id(terms.contract_id), Contract) is not None:
                    raise ContractRuleViolation(
                        f"contract {terms.contract_id} already exists; use contract.amended to "
                        "change its terms")
                self._keep(Contract.open(terms, command.message_id))
                self.new_contracts.append((terms.contract_id, terms.customer_id))
            case AmendContract():
                contract = self._contract(command.contract_id, command)
                priced = contract.usage_metrics()
                contract.amend(
                    command.effective_date,
                    command.components,
                    command.usage_threshold_amount,
                    command.payment_terms_days,
                    command.message_id,
                    sets_usage_threshold=command.sets_usage_threshold,
                )
                # Usage is priced by the terms at a period's end: what the contract prices
                # may change from the start of the period holding the effective date.
                self.changed.append((contract, local_midnight(period_containing(
                    contract.anchor, contract.frequency, command.effective_date).start,
                    contract.timezone), priced | contract.usage_metrics()))
                self._note(retroactive_change_note(contract, "amended from",
                                                   command.effective_date))
            case TerminateContract():
                contract = self._contract(command.contract_id, command)
                ended = contract.end_date
                contract.terminate(command.end_date, command.message_id)
                self.changed.append((contract, local_midnight(
                    command.end_date if ended is None else min(ended, command.end_date),
                    contract.timezone), contract.usage_metrics()))
                self._note(later_end_note(contract, ended)
                           or retroactive_change_note(contract, "terminated on",
                                                      command.end_date))
            case CompleteMilestone():
                self._contract(command.contract_id, command).complete_milestone(
                    command.milestone, command.completed_on, command.message_id
                )
            case DeclareWatermark():
                marks = self._get(WATERMARKS_ID, UsageWatermarks) or UsageWatermarks()
                self._keep(marks)
                was = marks.by_metric().get(command.metric)
                retired = marks.retirement(command.metric, command.source)
                changed = marks.declare(command.metric, command.source,
                                        command.complete_through)
                if changed and retired is not None and was is not None:
                    self._note(reactivation_note(named(command), retired, was,
                                                 marks.by_metric()[command.metric]))
                elif changed:
                    self._note(watermark_note(named(command), command.metric, command.source,
                                              command.complete_through, was,
                                              marks.active(command.metric)))
            case ReceivePayment():
                invoice = self._get(invoice_aggregate_id(command.invoice_number), Invoice)
                if invoice is None:
                    raise LookupError(
                        f"no invoice {command.invoice_number}; check the invoice number")
                # Its contract's timezone dates the payments, as the ledger does.
                note = invoice.apply_payment(
                    command.message_id, command.amount, command.currency, command.occurred_at,
                    self.app.contract_timezone(invoice.contract_id),
                )
                self._note(note)
            case PayRefund():
                invoice = self._get(invoice_aggregate_id(command.invoice_number), Invoice)
                if invoice is None:
                    raise LookupError(f"no invoice or credit note {command.invoice_number}; "
                                      "check the document number")
                invoice.pay_refund(command.message_id, command.amount, command.currency,
                                   command.occurred_at,
                                   self.app.contract_timezone(invoice.contract_id))
            case _:
                raise TypeError(f"unknown command {type(command).__name__}")
        self._receipt(command)


def named(command: Command) -> str:
    """How a reason names the message it refuses: `payment.received pay-4`."""
    return f"{command.message_type} {shown_id(command.message_id)}"


def _referenced(commands: Iterable[Command]) -> list[UUID]:
    """Contracts and invoices a batch of commands touches, to read them all at once."""
    ids: set[UUID] = set()
    for command in commands:
        match command:
            case CreateContract():
                ids.add(contract_aggregate_id(command.terms.contract_id))
            case AmendContract() | TerminateContract() | CompleteMilestone():
                ids.add(contract_aggregate_id(command.contract_id))
            case ReceivePayment() | PayRefund():
                ids.add(invoice_aggregate_id(command.invoice_number))
    return list(ids)
