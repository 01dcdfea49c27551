"""`batch verify`: bill a past batch again from the log as it stood, and compare.

Each attempt of a batch (its run, a resume after a crash, each retry) recorded in its manifest
the log position at which it started. For every contract outcome the batch recorded, the
contract, its customer's other contracts, the usage watermarks and the usage itself are rebuilt
from the events at or before that position (usage from the UsageBatch events, not from the
meters), the billing rules are applied again, and the result must be what the batch recorded:
the same invoice line for line, or the same hold, failure or nothing due.

One field cannot be recomputed from events alone: a line's `usage_revision` is the meters'
revision, the commit position of the transaction that recorded the usage (however late the
store folded it into the meters), which is at or after the position of the last usage event read
and, for a batch that saw only usage logged before it started, at or before the batch's start.
Verification checks exactly those bounds. A contract changed while its batch ran (usage or
terms logged after the attempt started but before its contract was billed, e.g. by a live
`consume`) differs from the log as it stood at the start. Each outcome records the position
through which the run had read when it decided the contract (`decided_through`); such a
contract is billed again as of that position too, and if it is the same there it is listed
apart (`changed_during_batch`), not as a difference; so is one the same as of the latest
`usage_revision` of its chunk's lines, which the meters had been folded through when the run
read them (usage logged after that and before `decided_through` was not yet in the meters). (Batches
run before `decided_through` was recorded show those contracts as differences.) Another
change is not a difference either: another batch of the same cycle date invoicing the
contract meanwhile (two runs at once), for which the batch recorded nothing due; it is listed
apart (`billed_elsewhere`), and that batch's own verification checks the invoice. Each outcome
is billed again as of the start of the attempt that recorded it (two processes on one batch id
record outcomes after both attempts began): every invoice of the batch once. Every outcome
recorded is billed again, but the batch's contracts are counted once each, whatever attempts
decided them (a retry, two processes on one batch id), with the batch's outcome: the invoice if
an attempt issued one, else the outcome recorded last. A batch whose last attempt recorded no
end (interrupted, or still running) is said to be unfinished: what it had not decided is not
verified.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent

from domain.application import BillingApplication
from domain.billing import (
    BillingContext,
    InvoiceDue,
)
from domain.billing_run import (
    BillingRun,
    ContractOutcome,
    Outcome,
    billing_run_id,
    replaces,
)
from domain.billing_runs import decide
from domain.contract import Contract
from domain.inbox import UsageWatermarks, context_sources, retired_record, sources_record
from domain.invoice import invoice_aggregate_id
from domain.invoice_lines import subtotals
from domain.meter_reads import StoreUsage
from domain.unbilled_usage import MeteredUsage, UsageWithoutContract
from domain.usage import (
    MeterIncrement,
    MeterReading,
    MeterRequest,
)
from domain.usage_assignments import assigned_usage
from projections.projection import event_class, topics
from projections.usage_log import counted, logged_usage, reading_of

STARTED = event_class(BillingRun, "Started")
RESUMED = event_class(BillingRun, "Resumed")
OUTCOMES = event_class(BillingRun, "OutcomesRecorded")
FINISHED = event_class(BillingRun, "Finished")
PAGE = 10_000


def aggregate_topics(aggregate: type[Aggregate]) -> tuple[str, ...]:
    """The topics of every event class of the aggregate: all it takes to rebuild it."""
    return topics(*(v for v in vars(aggregate).values()
                    if isinstance(v, type) and issubclass(v, Aggregate.Event)))


CONTRACT_TOPICS = aggregate_topics(Contract)
WATERMARK_TOPICS = aggregate_topics(UsageWatermarks)


@dataclass(frozen=True)
class Difference:
    contract_id: str
    number: str | None
    what: str
    recorded: Any
    recomputed: Any

    def to_json(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class BilledElsewhere:
    """A contract an attempt found nothing due for because another batch of the same cycle
    date, or another attempt of this batch, invoiced it after the attempt started (two runs
    at once): not a difference."""

    contract_id: str
    number: str
    batch_id: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ChangedDuringBatch:
    """A contract whose usage or terms changed while its batch ran (logged after the attempt
    started, before the run decided the contract, e.g. by a live `consume`): billed again from
    the log as of the attempt's start it differs, as of the position through which the run
    had read when it decided the contract it is the same. Not a difference."""

    contract_id: str
    number: str | None
    started_at: int  # the attempt's log position at its start
    decided_through: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Verification:
    batch_id: str
    cycle_date: date
    attempts: int = 0
    # The batch's outcome of each contract it decided, counted once however many attempts
    # decided it (`_batch_outcome`), and how many contracts each attempt decided, in their order.
    outcomes: dict[str, int] = field(default_factory=dict)
    contracts_by_attempt: list[int] = field(default_factory=list)
    invoices: int = 0
    differences: list[Difference] = field(default_factory=list)
    billed_elsewhere: list[BilledElsewhere] = field(default_factory=list)
    changed_during_batch: list[ChangedDuringBatch] = field(default_factory=list)
    # Whether the batch's last attempt recorded its end; if not (interrupted, or still
    # running), what it had not decided yet is not verified: nothing says what it would be.
    finished: bool = True
    last_attempt: str = "run"  # its kind: run, resume or retry

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def contracts(self) -> int:
        """The batch's contracts: each once, whatever attempts decided it."""
        return sum(self.outcomes.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id, "cycle_date": self.cycle_date.isoformat(),
            "identical": self.identical, "finished": self.finished, "attempts": self.attempts,
            "last_attempt": self.last_attempt,
            "contracts": self.contracts, "outcomes": self.outcomes,
            "contracts_by_attempt": self.contracts_by_attempt, "invoices": self.invoices,
            "differences": [d.to_json() for d in self.differences],
            "billed_elsewhere": [b.to_json() for b in self.billed_elsewhere],
            "changed_during_batch": [c.to_json() for c in self.changed_during_batch],
        }


@dataclass
class _Attempt:
    manifest: dict[str, Any]
    outcomes: dict[str, ContractOutcome] = field(default_factory=dict)

    @property
    def log_position(self) -> int:
        return int(self.manifest["log_position"])

    def file(self, outcome: ContractOutcome) -> None:
        """Keep an outcome the attempt recorded; as the batch itself (BillingRun), nothing due
        never replaces an invoice: each invoice is billed again once."""
        if replaces(outcome, self.outcomes.get(outcome.contract_id)):
            self.outcomes[outcome.contract_id] = outcome


def verify_batch(app: BillingApplication, batch_id: str) -> Verification:
    """Recompute every outcome the batch recorded from the log as each attempt found it."""
    run_events: list[Any] = list(app.events.get(billing_run_id(batch_id)))
    if not run_events:
        raise LookupError(f"no batch {batch_id}; `billcycle batch list` shows them")
    attempts: list[_Attempt] = []
    batch: dict[str, Outcome] = {}
    finished, kind = False, "run"
    for e in run_events:
        if isinstance(e, STARTED | RESUMED):
            attempts.append(_Attempt(e.manifest))
            finished, kind = False, getattr(e, "kind", "run")
        elif isinstance(e, FINISHED):
            finished = True
        elif isinstance(e, OUTCOMES):
            # The attempt that decided them (two processes on one batch id record after both
            # attempts began). Stored before outcomes named it: the latest attempt then, which
            # had begun before the attempt that decided them issued any invoice of theirs.
            index = getattr(e, "attempt", None)
            attempt = attempts[-1 if index is None else index]
            for record in e.outcomes:
                outcome = ContractOutcome.from_record(record)
                attempt.file(outcome)
                batch[outcome.contract_id] = _batch_outcome(batch.get(outcome.contract_id),
                                                            outcome.outcome)
    cycle_date = run_events[0].cycle_date
    outcomes = {o.value: 0 for o in Outcome}
    for decided in batch.values():
        outcomes[decided.value] += 1
    result = Verification(batch_id, cycle_date, attempts=len(attempts), outcomes=outcomes,
                          contracts_by_attempt=[len(a.outcomes) for a in attempts],
                          finished=finished, last_attempt=kind)
    # The log through the last position any attempt started at or decided a contract at.
    log = _LogAsOf(app, max(position for a in attempts for position in (
        a.log_position, *(o.decided_through or 0 for o in a.outcomes.values()))))
    for attempt in attempts:
        if attempt.outcomes:
            _verify_attempt(app, log, attempt, cycle_date, result)
    return result


def _batch_outcome(kept: Outcome | None, recorded: Outcome) -> Outcome:
    """A contract's outcome in the batch, given the one kept so far and the next one an attempt
    recorded: the invoice wins (it is in the log, whatever another attempt held, failed or
    found nothing due for: two processes on one batch id), else the latest recorded."""
    return kept if kept is Outcome.INVOICED else recorded


def _verify_attempt(app: BillingApplication, log: _LogAsOf, attempt: _Attempt,
                    cycle_date: date, result: Verification) -> None:
    position = attempt.log_position
    contracts = log.contracts(position)
    marks = log.watermarks(position)
    recorded_marks = attempt.manifest.get("watermarks", {})
    if marks != recorded_marks:
        result.differences.append(Difference(
            "*", None, f"watermarks at log position {position}", recorded_marks, marks))
    # A batch begun before runs recorded each source's watermark is billed again without
    # them, as it was: its hold reasons named no source; one begun before sources could be
    # retired, without retirements: its reasons named none, nor the command for one.
    rebuilt: dict[str, Any] = {}
    for key, record in (("watermark_sources", log.watermark_sources),
                        ("retired_watermark_sources", log.retired_sources)):
        if key in attempt.manifest:
            rebuilt[key] = record(position)
            if rebuilt[key] != attempt.manifest[key]:
                result.differences.append(Difference(
                    "*", None, f"{key.replace('_', ' ')} at log position {position}",
                    attempt.manifest[key], rebuilt[key]))
    sources, retired = context_sources(rebuilt)
    ctx = BillingContext(cycle_date, {m: datetime.fromisoformat(t) for m, t in marks.items()},
                         position, assigned_usage=assigned_usage(
                             attempt.manifest.get("assigned_usage", ())),
                         watermark_sources=sources, retired_sources=retired)
    customers = {c.customer_id for cid, c in contracts.items() if cid in attempt.outcomes}
    meters = log.meters(position, customers)
    # Contracts that differ as of the start, billed again as the run read them, below.
    later: list[tuple[ContractOutcome, list[Difference]]] = []
    for cid, recorded in sorted(attempt.outcomes.items()):
        contract = contracts.get(cid)
        if contract is None:
            result.differences.append(Difference(cid, recorded.number, "contract",
                                                 "billed", f"absent at log position {position}"))
            continue
        decided = _decide(contract, contracts, ctx, meters)
        if recorded.outcome is Outcome.INVOICED:
            result.invoices += 1
        elif recorded.outcome is Outcome.NOT_DUE and isinstance(decided, InvoiceDue):
            elsewhere = _billed_elsewhere(app, contract, result)
            if elsewhere is not None:
                result.billed_elsewhere.append(elsewhere)
                continue
        diffs = _compare(app, recorded, decided, contract, position)
        if diffs and (recorded.decided_through or position) > position:
            later.append((recorded, diffs))
        else:
            result.differences.extend(diffs)
    _verify_as_read(app, log, ctx, position, later, result)


def _verify_as_read(app: BillingApplication, log: _LogAsOf, ctx: BillingContext,
                    started_at: int, differing: list[tuple[ContractOutcome, list[Difference]]],
                    result: Verification) -> None:
    """Contracts that differ from the log as of their attempt's start, billed again (with the
    watermarks of the start, as the run had them) as the run read them: the same, they
    changed while the batch ran.

    First as of the position through which the run had read when it decided them (each chunk
    of the run has its own). Then, for those still differing, as of the position the chunk's
    meters had been folded through: usage logged after it, before the chunk was decided, was
    not in them. That position is at least the latest `usage_revision` of the chunk's lines,
    and as of that revision every meter the chunk read holds what the run read (usage folded
    into a meter later than the read would have raised its revision)."""
    pending = {recorded.contract_id: (recorded, diffs) for recorded, diffs in differing}
    by_through: dict[int, list[ContractOutcome]] = {}
    for recorded, _ in differing:
        by_through.setdefault(recorded.decided_through or started_at, []).append(recorded)
    for through, chunk in sorted(by_through.items()):
        _changed_as_of(app, log, ctx, started_at, through, chunk, pending, result)
        still = [r for r in chunk if r.contract_id in pending]
        read_at = max((at for r in still if (at := _meters_read_at(app, r)) is not None),
                      default=None)
        if still and read_at is not None and started_at < read_at < through:
            _changed_as_of(app, log, ctx, started_at, read_at, still, pending, result)
    for _, diffs in pending.values():
        result.differences.extend(diffs)


def _changed_as_of(app: BillingApplication, log: _LogAsOf, ctx: BillingContext,
                   started_at: int, at: int, outcomes: list[ContractOutcome],
                   pending: dict[str, tuple[ContractOutcome, list[Difference]]],
                   result: Verification) -> None:
    """List apart, and take out of `pending`, the outcomes the log as of `at` reproduces."""
    contracts = log.contracts(at)
    meters = log.meters(at, {contracts[r.contract_id].customer_id for r in outcomes
                             if r.contract_id in contracts})
    for recorded in outcomes:
        contract = contracts.get(recorded.contract_id)
        if contract is not None and not _compare(
                app, recorded, _decide(contract, contracts, ctx, meters), contract, at):
            del pending[recorded.contract_id]
            result.changed_during_batch.append(ChangedDuringBatch(
                recorded.contract_id, recorded.number, started_at,
                recorded.decided_through or started_at))


def _meters_read_at(app: BillingApplication, recorded: ContractOutcome) -> int | None:
    """The latest meter revision the recorded invoice's lines were read at, if any."""
    if recorded.number is None:
        return None
    issued: Any = next(app.events.get(invoice_aggregate_id(recorded.number), lte=1))
    revisions = [line["basis"]["usage_revision"] for line in issued.lines
                 if (line.get("basis") or {}).get("usage_revision") is not None]
    return max(revisions, default=None)


def _decide(contract: Contract, contracts: Mapping[str, Contract], ctx: BillingContext,
            meters: _Meters) -> ContractOutcome | InvoiceDue:
    siblings = [c for c in contracts.values()
                if c.customer_id == contract.customer_id and c.contract_id != contract.contract_id]
    return decide(contract, ctx, StoreUsage(meters, contract, siblings,
                                            assigned=ctx.assigned_usage))


def _billed_elsewhere(app: BillingApplication, as_of_start: Contract,
                      result: Verification) -> BilledElsewhere | None:
    """The invoice another batch of the same cycle date, or another attempt of this one,
    issued the contract after this attempt started (the log as of its start does not show it),
    if any: why the attempt found nothing due where the log as of its start has one due."""
    now = app.contract(as_of_start.contract_id)
    seen = set(as_of_start.invoice_ids)
    for invoice_id in (now.invoice_ids if now is not None else []):
        if invoice_id in seen:
            continue
        issued: Any = next(app.events.get(invoice_id, lte=1))
        # Another batch of the same cycle date, or another attempt of this one (two
        # processes on one batch id): this attempt recorded nothing due for the contract.
        if issued.cycle_date == result.cycle_date:
            return BilledElsewhere(as_of_start.contract_id, issued.number, issued.batch_id)
    return None


def _compare(app: BillingApplication, recorded: ContractOutcome,
             decided: ContractOutcome | InvoiceDue, contract: Contract, position: int,
             ) -> list[Difference]:
    cid, number = recorded.contract_id, recorded.number
    if isinstance(decided, ContractOutcome):
        now = decided.to_record()
        was = {k: v for k, v in recorded.to_record().items() if k in ("outcome", "reason",
                                                                      "next_due")}
        return [Difference(cid, number, k, was.get(k), now.get(k))
                for k in ("outcome", "reason", "next_due") if was.get(k) != now.get(k)]
    if recorded.outcome is not Outcome.INVOICED or number is None:
        return [Difference(cid, number, "outcome", recorded.outcome.value, "invoiced")]
    issued: Any = next(app.events.get(invoice_aggregate_id(number), lte=1))
    lines = [line.to_record() for line in decided.lines]
    total = decided.total
    expected = {
        "contract_id": contract.contract_id,
        "customer_id": contract.customer_id,
        "currency": contract.currency,
        "issue_date": decided.issue_date,
        "due_date": decided.due_date,
        "document_type": "credit_note" if total < 0 else "invoice",
        "total": total,
        "subtotals": subtotals(list(decided.lines)),
        "contract_version": contract.version,
    }
    diffs = [Difference(cid, number, k, getattr(issued, k), v)
             for k, v in expected.items() if getattr(issued, k) != v]
    return diffs + _compare_lines(cid, number, issued.lines, lines, position)


# Basis keys that only explain a line (no amount follows from them), added after batches
# were issued without them.
EXPLANATIONS_ADDED_LATER = frozenset({"contract_changes", "untagged_usage_within",
                                      "uncounted_events", "uncounted_example"})


def _compare_lines(cid: str, number: str, was: list[dict[str, Any]],
                   now: list[dict[str, Any]], position: int) -> list[Difference]:
    diffs = []
    if len(was) != len(now):
        diffs.append(Difference(cid, number, "lines", len(was), len(now)))
    for i, (a, b) in enumerate(zip(was, now, strict=False)):
        a_basis, b_basis = dict(a.get("basis") or {}), dict(b.get("basis") or {})
        a_rev, b_rev = a_basis.pop("usage_revision", None), b_basis.pop("usage_revision", None)
        for said in EXPLANATIONS_ADDED_LATER - a_basis.keys():
            b_basis.pop(said, None)  # a batch issued before a line said it decides the same
        for key in sorted(set(a) | set(b)):
            a_value = a_basis if key == "basis" else a.get(key)
            b_value = b_basis if key == "basis" else b.get(key)
            if a_value != b_value:
                diffs.append(Difference(cid, number, f"lines[{i}].{key}", a_value, b_value))
        if (a_rev is None) != (b_rev is None) or (
                a_rev is not None and not b_rev <= a_rev <= position):
            diffs.append(Difference(
                cid, number, f"lines[{i}].basis.usage_revision", a_rev,
                f"between {b_rev} (last usage event read) and {position} (batch start)"))
    for i in range(len(now), len(was)):
        diffs.append(Difference(cid, number, f"lines[{i}]", was[i], None))
    for i in range(len(was), len(now)):
        diffs.append(Difference(cid, number, f"lines[{i}]", None, now[i]))
    return diffs


def _plain(value: Any) -> Any:
    """A value as JSON shows it: text for amounts and dates, sorted JSON for records."""
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


# --- the log as it stood ---------------------------------------------------------------------


class _LogAsOf:
    """Contracts, watermarks and usage rebuilt from the log up to a position."""

    def __init__(self, app: BillingApplication, through: int) -> None:
        self.app = app
        self.through = through
        self._contract_events = list(self._read(CONTRACT_TOPICS))
        self._watermark_events = list(self._read(WATERMARK_TOPICS))

    def _read(self, wanted: Sequence[str]) -> Iterator[tuple[int, Any]]:
        for n in self._notifications(wanted):
            yield n.id, self.app.mapper.to_domain_event(n)

    def _notifications(self, wanted: Sequence[str]) -> Iterator[Any]:
        after = 0
        while True:
            page = self.app.recorder.select_notifications(
                start=after, limit=PAGE, stop=self.through, topics=wanted,
                inclusive_of_start=False)
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1].id

    def contracts(self, position: int) -> dict[str, Contract]:
        return {c.contract_id: c for c in _replay(self._contract_events, position)
                if isinstance(c, Contract)}

    def watermarks(self, position: int) -> dict[str, str]:
        marks = self._watermarks(position)
        return {m: t.isoformat() for m, t in marks.by_metric().items()} if marks else {}

    def watermark_sources(self, position: int) -> dict[str, dict[str, str]]:
        return sources_record(self._watermarks(position))

    def retired_sources(self, position: int) -> dict[str, dict[str, dict[str, str]]]:
        return retired_record(self._watermarks(position))

    def _watermarks(self, position: int) -> UsageWatermarks | None:
        marks = [m for m in _replay(self._watermark_events, position)
                 if isinstance(m, UsageWatermarks)]
        return marks[0] if marks else None

    def meters(self, position: int, customers: set[str]) -> _Meters:
        """The usage of these customers logged at or before `position`."""
        meters = _Meters()
        for at, usage in logged_usage(self.app, min(position, self.through), customers):
            meters.add(at, usage.increment())
        return meters


def _replay(events: Sequence[tuple[int, Any]], position: int) -> list[Aggregate]:
    aggregates: dict[UUID, Aggregate] = {}
    for at, e in events:
        if at > position:
            break
        aggregates[e.originator_id] = e.mutate(aggregates.get(e.originator_id))
    return list(aggregates.values())


class _Meters:
    """The BillingStore reads of StoreUsage, over usage events instead of stored meters."""

    def __init__(self) -> None:
        self.increments: dict[tuple[str, str], list[tuple[int, MeterIncrement]]] = {}

    def add(self, position: int, increment: MeterIncrement) -> None:
        key = (increment.key.customer_id, increment.key.metric)
        self.increments.setdefault(key, []).append((position, increment))

    def _matching(self, customer_id: str, metric: str, tags: Sequence[str], start: datetime | None,
                  end: datetime, untagged_within: Sequence[tuple[datetime, datetime]] = (),
                  ) -> list[tuple[int, MeterIncrement]]:
        return [(at, i) for at, i in self.increments.get((customer_id, metric), [])
                if counted(i, tags, start, end, untagged_within)]

    def update_meters(self, most: int | None = None) -> int:
        return 0  # folded from the log as it stood at the verified position, in `meters`

    def read_meter(self, customer_id: str, metric: str, contract_tags: Sequence[str],
                   start: datetime, end: datetime, unique_property: str | None,
                   untagged_within: Sequence[tuple[datetime, datetime]] = ()) -> MeterReading:
        found = self._matching(customer_id, metric, contract_tags, start, end, untagged_within)
        return reading_of(found, unique_property)

    def read_meters(self, requests: Sequence[MeterRequest]) -> list[MeterReading]:
        return [self.read_meter(r.customer_id, r.metric, r.contract_tags, r.start, r.end,
                                r.unique_property, r.untagged_within) for r in requests]

    def changed_buckets(self, customer_id: str, metric: str, contract_tags: Sequence[str],
                        since_revision: int, before: datetime) -> list[datetime]:
        found = self._matching(customer_id, metric, contract_tags, None, before)
        return sorted({i.key.bucket_start for at, i in found if at > since_revision})

    def contract_ids(self, after: str | None, limit: int) -> list[str]:
        raise NotImplementedError("verification bills the contracts a batch recorded")

    def customer_contract_ids(self, customer_ids: Sequence[str]) -> dict[str, list[str]]:
        raise NotImplementedError("verification passes the customer's contracts in")

    def metered_usage(
        self, customer_ids: Sequence[str],
        since: Mapping[tuple[str, str], datetime] | None = None,
    ) -> dict[str, dict[str, MeteredUsage]]:
        raise NotImplementedError("verification compares outcomes, not their notes")

    def usage_without_contract(self) -> list[UsageWithoutContract]:
        raise NotImplementedError("verification bills the contracts a batch recorded")

    def events_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        raise NotImplementedError("verification replays the log itself")

    def first_versions(self, originator_ids: Sequence[UUID]) -> dict[UUID, StoredEvent]:
        raise NotImplementedError("verification reads no message receipts")

    def indexed_events(self, topic: str) -> list[StoredEvent]:
        raise NotImplementedError("verification is given its batch and reads no dead letters")

    def received_messages(self, message_ids: Sequence[str]) -> dict[str, str]:
        raise NotImplementedError("verification ingests nothing")

    def max_notification_id(self) -> int | None:
        raise NotImplementedError("verification knows the position it verifies at")

