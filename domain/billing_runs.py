"""The billing run: bill every contract of the book for a cycle date, chunk by chunk.

Each chunk is one transaction: the invoices, the contracts they settle, the invoice numbers
they take and the batch's record of every contract's outcome. A crash loses at most the chunk
in flight and a rerun of the batch picks up where it stopped; a concurrent run of another batch
conflicts on the contracts' versions and the number sequence, reloads and finds nothing left to
bill. Numbers stay gapless because they are allocated in the transaction that uses them.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain.acknowledgements import notes_from
from domain.application import BillingApplication, ConcurrentUpdate
from domain.billing import (
    BillingContext,
    Held,
    InvoiceDue,
    NothingDue,
    UsageNotBillable,
    UsageReader,
    bill_contract,
    plan_usage_reads,
)
from domain.billing_run import (
    USAGE_NOTES,
    BillingRun,
    ContractOutcome,
    Outcome,
    billing_run_id,
)
from domain.contract import Contract
from domain.inbox import context_sources, retired_record, sources_record
from domain.invoice import INVOICE_NUMBERS_ID, Invoice, InvoiceNumbers, invoice_sequence
from domain.invoice_lines import subtotals
from domain.meter_reads import MeterReads, StoreUsage
from domain.money import format_money
from domain.transcoding import JSONRecords
from domain.unbilled_usage import (
    MeteredUsage,
    UnbilledWindow,
    misattributed_usage,
    notes_warning,
    unbilled_windows,
    unpriced_usage,
    usage_in_unbilled_windows,
    usage_outside_service,
    usage_without_contract_warning,
    window_reads,
)
from domain.usage_assignments import assigned_usage

CHUNK_SIZE = 200
MAX_CHUNK_ATTEMPTS = 100
# Each note of USAGE_NOTES and the rule that writes it.
_USAGE_RULES = (
    ("unpriced_usage", unpriced_usage),
    ("usage_outside_service", usage_outside_service),
    ("usage_in_unbilled_windows", usage_in_unbilled_windows),
    ("misattributed_usage", misattributed_usage),
)

Progress = Callable[[int, int], None]  # (contracts settled so far, contracts in the book)
# The batch as saved at its start (or resume), and the other batches of its cycle date that
# had started and not finished (said at once too: a run killed later never says it otherwise).
BatchStarted = Callable[[BillingRun, list[BillingRun]], None]


@dataclass(frozen=True)
class IssuedInvoice:
    """An invoice a run issued, as its report needs it (the invoice itself is in the store)."""

    invoice_id: str
    number: str
    contract_id: str
    document_type: str
    currency: str
    total: Decimal
    issue_date: date


@dataclass
class RunReport:
    """What a billing run (or retry) did: the `run --json` document.

    It keeps a small row per invoice, not the invoices: a run over the whole book must not
    hold the book in memory. A dry run keeps its drafts, since nothing else has them.
    An attempt (`run`, `resume` or `retry`) reports the contracts it settled itself: not those
    an earlier attempt at the batch settled, nor those another process on the same batch id
    settled meanwhile (`batch_counts` is the whole batch's).
    """

    batch_id: str
    cycle_date: date
    dry_run: bool
    outcomes: dict[str, ContractOutcome] = field(default_factory=dict)
    invoices: list[IssuedInvoice] = field(default_factory=list)  # issued, or drafted
    drafts: list[Invoice] = field(default_factory=list)  # dry run only
    warnings: list[str] = field(default_factory=list)
    # Contracts found nothing due because another batch of the cycle date, running beside
    # this one or left unfinished, invoiced them: contract id -> that batch's id.
    billed_elsewhere: dict[str, str] = field(default_factory=dict)
    # Other batches of the cycle date started and not finished, when this run started and
    # still when it ended.
    unfinished: list[str] = field(default_factory=list)
    batch_counts: dict[str, int] | None = None  # the batch's own, once finished (not dry)
    attempt: str = "run"  # the kind of attempt at the batch: run, resume or retry
    # Its invoices issued before the cycle date of a batch already started (BackDated).
    backdated: BackDated | None = None

    def record(self, outcomes: Sequence[ContractOutcome], issued: Sequence[Any]) -> None:
        """A settled chunk: its outcomes and the `InvoiceIssued` events of its invoices."""
        for outcome in outcomes:
            self.outcomes[outcome.contract_id] = outcome
        for invoice in issued:
            self.add(invoice)

    def add(self, issued: Any) -> None:
        """An invoice issued (or drafted), given as its `InvoiceIssued` event."""
        self.invoices.append(IssuedInvoice(
            str(issued.originator_id), issued.number, issued.contract_id, issued.document_type,
            issued.currency, issued.total, issued.issue_date))
        if self.dry_run:
            self.drafts.append(issued.mutate(None))

    def counts(self) -> dict[str, int]:
        counts = {o.value: 0 for o in Outcome}
        for outcome in self.outcomes.values():
            counts[outcome.outcome.value] += 1
        return {"contracts": len(self.outcomes), **counts}

    def billed_by(self) -> dict[str, int]:
        """Per other batch, how many of this run's not-due contracts it invoiced."""
        by: dict[str, int] = {}
        for batch_id in self.billed_elsewhere.values():
            by[batch_id] = by.get(batch_id, 0) + 1
        return dict(sorted(by.items()))

    def to_json(self) -> dict[str, Any]:
        def listed(kind: Outcome) -> list[dict[str, Any]]:
            return [
                {"contract_id": o.contract_id, "reason": o.reason}
                for o in self.outcomes.values() if o.outcome is kind
            ]

        return {
            "batch_id": self.batch_id,
            "cycle_date": self.cycle_date.isoformat(),
            "dry_run": self.dry_run,
            "attempt": self.attempt,
            "counts": self.counts(),
            "invoices": [
                o.invoice_id for o in self.outcomes.values()
                if o.outcome is Outcome.INVOICED and o.invoice_id
            ],
            "held": listed(Outcome.HELD),
            "failed": listed(Outcome.FAILED),
            "warnings": self.warnings,
            # Of the contracts counted not due, those another batch invoiced, per batch.
            "billed_elsewhere": [{"batch_id": b, "contracts": n}
                                 for b, n in self.billed_by().items()],
            "unfinished_batches": self.unfinished,
            "batch_counts": self.batch_counts,
            "backdated": self.backdated.to_json() if self.backdated else None,
        }


@dataclass(frozen=True)
class BackDated:
    """Invoices an attempt issued on a date before the cycle date of a batch already started.

    Issued on their batch's cycle date (contract.md), however late the attempt: a retry, a
    resume or a run of an earlier date after a later date was billed moves the reports as of
    their issue date and after (docs/accounting.md, "Invoices issued before a later batch").
    """

    issue_date: date  # the earliest of them
    numbers: list[str]
    later_batches: list[tuple[str, date]]  # (batch id, cycle date)
    dry_run: bool

    @classmethod
    def find(cls, report: RunReport, started: list[tuple[str, date]]) -> BackDated | None:
        """The report's invoices dated before the cycle date of one of `started`, if any."""
        latest = max((day for _, day in started), default=None)
        dated = [i for i in report.invoices if latest is not None and i.issue_date < latest]
        if not dated:
            return None
        first = min(i.issue_date for i in dated)
        return cls(first, sorted((i.number for i in dated), key=invoice_sequence),
                   [(b, day) for b, day in started if day > first], report.dry_run)

    def to_json(self) -> dict[str, Any]:
        return {
            "issue_date": self.issue_date.isoformat(),
            "invoices": self.numbers,
            "later_batches": [{"batch_id": b, "cycle_date": day.isoformat()}
                              for b, day in self.later_batches],
            # Reports as of this date or later differ from those made before this attempt.
            "reports_changed_from": self.issue_date.isoformat(),
            "reports_changed": list(CHANGED_REPORTS),
        }

    def warning(self, attempt: str) -> str:
        """Said on stderr and among the warnings: what moved, from which date, and why."""
        day = self.issue_date.isoformat()
        count = len(self.numbers)
        first, last = self.numbers[0], self.numbers[-1]
        numbers = first if count == 1 else f"{first} .. {last}"
        issued = "would be issued" if self.dry_run else "are issued"
        batches = ", ".join(f"{b} ({d.isoformat()})" for b, d in self.later_batches[:3]) + (
            f" and {len(self.later_batches) - 3} more" if len(self.later_batches) > 3 else "")
        later = "batch" if len(self.later_batches) == 1 else "batches"
        return (f"back-dated: {count} invoice(s) of this {attempt} ({numbers}) {issued} on "
                f"{day}, their batch's cycle date (contract.md: issued on D), after {later} "
                f"{batches} of a later cycle date had run: reports as of {day} or later "
                "change (report revenue: billed, recognized and deferred; report ar-aging; "
                f"collections; export beancount gains transactions dated {day}) and invoice "
                f"numbers no longer follow issue dates; run again any such report made as of "
                f"{day} or later (docs/accounting.md, \"Invoices issued before a later "
                "batch\")")


# What an invoice issued on D changes: the reports as of D or later (BackDated).
CHANGED_REPORTS = ("report revenue", "report ar-aging", "collections", "export beancount")


def new_batch_id(cycle_date: date) -> str:
    return f"B-{cycle_date:%Y%m%d}-{uuid.uuid4().hex[:8]}"


def decide(
    contract: Contract, ctx: BillingContext, usage: UsageReader
) -> ContractOutcome | InvoiceDue:
    """What a billing run does with one contract: the invoice due, or the outcome and why."""
    cid = contract.contract_id
    try:
        outcome = bill_contract(contract, ctx, usage)
    except (UsageNotBillable, ValueError, ArithmeticError, LookupError) as exc:
        return ContractOutcome(cid, Outcome.FAILED,
                               reason=f"could not price: {exc} ({type(exc).__name__})")
    if isinstance(outcome, Held):
        return ContractOutcome(cid, Outcome.HELD, reason=outcome.reason,
                               uncounted_usage=outcome.uncounted_usage)
    if isinstance(outcome, NothingDue):
        last = contract.last_invoice
        reason = f"nothing due; last invoice {last[0]} in batch {last[1]}" if last else None
        next_due = outcome.next_due.isoformat() if outcome.next_due else None
        return ContractOutcome(cid, Outcome.NOT_DUE, reason=reason, next_due=next_due,
                               uncounted_usage=outcome.uncounted_usage)
    return outcome


def plan(contract: Contract, ctx: BillingContext, usage: UsageReader) -> None:
    """Note the meter reads `decide` will make; a contract that cannot be priced is left to
    `decide`, which says why."""
    with contextlib.suppress(UsageNotBillable, ValueError, ArithmeticError, LookupError):
        plan_usage_reads(contract, ctx, usage)


@dataclass
class _Decided:
    """A chunk's contracts and what is due from each, before numbers are taken."""

    contract_ids: list[str]
    contracts: dict[str, Contract]
    decided: list[tuple[str, ContractOutcome | InvoiceDue]]
    # Per contract, notes on its customer's usage that no contract bills (unbilled_usage.py),
    # by their fields of ContractOutcome (USAGE_NOTES).
    notes: dict[str, dict[str, str]]
    read_through: int | None  # the log's last position once every read was done

    def noted(self, outcome: ContractOutcome) -> ContractOutcome:
        fields: dict[str, Any] = dict(self.notes.get(outcome.contract_id, {}))  # USAGE_NOTES
        return replace(outcome, **fields, decided_through=self.read_through)


@dataclass
class _Saving:
    """A chunk whose save is in flight, with what the report takes once it has committed."""

    contract_ids: list[str]
    run: BillingRun
    future: Future[None]
    outcomes: list[ContractOutcome]
    invoices: list[Any]


class BillingRuns:
    """Runs, resumes and retries billing runs on a billing application."""

    def __init__(
        self,
        app: BillingApplication,
        now: Callable[[], datetime],
        chunk_size: int = CHUNK_SIZE,
        input_manifest: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.app = app
        self.now = now
        self.chunk_size = chunk_size
        self.input_manifest = input_manifest or dict
        # Kept between chunks so a dry run numbers its drafts as the real run would.
        self._numbering: InvoiceNumbers | None = None
        # Contracts already billed for a later cycle date than the run's: said once, at the end.
        self._billed_later: dict[str, date] = {}
        # Contracts whose last invoice another batch of the cycle date issued, by that batch
        # (RunReport.billed_elsewhere), except the batches in `_not_elsewhere`: this one and
        # those of the cycle date that had finished when it started (a plain rerun).
        self._elsewhere: dict[str, str] = {}
        self._not_elsewhere: set[str] = set()
        # The other batches of the cycle date started and not finished when it started.
        self._unfinished: list[BillingRun] = []
        # The index, among the batch's attempts, of the attempt this object is making.
        self._attempt = 0

    # --- commands ---------------------------------------------------------------------------

    def run(
        self,
        cycle_date: date,
        batch_id: str | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
        started: BatchStarted | None = None,
    ) -> RunReport:
        run, manifest = self._begin(cycle_date, batch_id or new_batch_id(cycle_date), dry_run,
                                    started)
        report = RunReport(run.batch_id, cycle_date, dry_run,
                           attempt="resume" if self._attempt else "run")
        report.warnings.extend(manifest.get("warnings", []))
        ctx = self._context(cycle_date, manifest)
        total = self._book_size() if progress else 0  # a walk of the whole index: only to show
        done = len(run.outcomes)
        chunks = self._chunks(skip=set(run.outcomes))

        def settled(contracts: int) -> None:
            nonlocal done
            done += contracts
            if progress:
                progress(min(done, total), total)

        if dry_run:
            for chunk in chunks:
                run = self._settle(run, chunk, ctx, dry_run, report)
                settled(len(chunk))
            return self._finish(run, report, dry_run)
        # A chunk's save is written by a thread while the next chunk is decided (contracts
        # read, meters read, billing rules). Deciding depends on nothing the save writes: the
        # chunks' contracts are disjoint and a run never changes terms or meters. Numbers and
        # the run's outcomes are taken only once the save before has committed, and a save
        # refused by another writer is settled again, alone, exactly as before.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="billing-save") as writer:
            saving: _Saving | None = None
            for chunk in chunks:
                decided = self._decide_chunk(chunk, ctx)
                if saving is not None:
                    run = self._saved(saving, ctx, report)
                    settled(len(saving.contract_ids))
                saving = self._save_async(writer, run, decided)
            if saving is not None:
                run = self._saved(saving, ctx, report)
                settled(len(saving.contract_ids))
        return self._finish(run, report, dry_run)

    def retry(self, batch_id: str, progress: Progress | None = None) -> RunReport:
        run = self.app.get_or_none(billing_run_id(batch_id), BillingRun)
        if run is None:
            raise LookupError(f"no batch {batch_id}; `billcycle batch list` shows them")
        self._reset(batch_id, run.cycle_date)
        manifest = self._manifest()
        run.resume("retry", self.now(), manifest)
        self._attempt = len(run.attempts) - 1
        self.app.save(run)
        report = RunReport(batch_id, run.cycle_date, False, attempt="retry")
        report.warnings.extend(manifest.get("warnings", []))
        ctx = self._context(run.cycle_date, manifest)
        pending = run.retryable()
        for i in range(0, len(pending), self.chunk_size):
            chunk = pending[i:i + self.chunk_size]
            run = self._settle(run, chunk, ctx, False, report)
            if progress:
                progress(min(i + len(chunk), len(pending)), len(pending))
        return self._finish(run, report, False)

    # --- steps ------------------------------------------------------------------------------

    def _reset(self, batch_id: str, cycle_date: date) -> None:
        """Start afresh for a batch, noting the other batches of its cycle date."""
        self._numbering = None  # never carry a dry run's numbers into a real run
        self._billed_later = {}
        self._elsewhere = {}
        others = [b for b in self.app.batches(cycle_date) if b.batch_id != batch_id]
        self._not_elsewhere = {batch_id, *(b.batch_id for b in others if b.finished_at)}
        self._unfinished = [b for b in others if b.finished_at is None]

    def _begin(self, cycle_date: date, batch_id: str, dry_run: bool,
               started: BatchStarted | None = None) -> tuple[BillingRun, dict[str, Any]]:
        """The batch with this process's attempt at it begun (saved, and said to `started`,
        unless a dry run), and the attempt's manifest."""
        self._reset(batch_id, cycle_date)
        manifest = self._manifest()
        run = self.app.get_or_none(billing_run_id(batch_id), BillingRun)
        if run is None:
            run = BillingRun(batch_id=batch_id, cycle_date=cycle_date, started_at=self.now(),
                             manifest=manifest)
        else:
            run.check_cycle_date(cycle_date)
            run.resume("resume", self.now(), manifest)
        # Kept here, not read from the run: a run reloaded after another process's attempt
        # began at this batch has that attempt last.
        self._attempt = len(run.attempts) - 1
        if not dry_run:
            self.app.save(run)
            if started:
                started(run, self._unfinished)
        return run, manifest

    def _manifest(self) -> dict[str, Any]:
        marks = self.app.watermarks()
        manifest = {
            "log_position": self.app.store.max_notification_id() or 0,
            "watermarks": {
                m: t.isoformat() for m, t in (marks.by_metric() if marks else {}).items()
            },
            # Each source's, for the hold reasons to name those behind (and verify to check),
            # and those retired, which bound their metric no more.
            "watermark_sources": sources_record(marks),
            "retired_watermark_sources": retired_record(marks),
            **self.input_manifest(),
        }
        acknowledged = self.app.usage_acknowledgements()
        if acknowledged:  # in force at the start, recorded with what the run saw
            manifest["acknowledged_usage"] = [a.to_json() for a in acknowledged]
        assigned = self.app.usage_assignments()
        if assigned:  # likewise: `batch verify` decides again with the same ones
            manifest["assigned_usage"] = [a.to_json() for a in assigned]
        self.app.store.update_meters()  # usage recorded by now is in the meters read below
        unclaimed = self.app.store.usage_without_contract()
        if unclaimed:
            manifest["usage_without_contract"] = {
                "customers": len({u.customer_id for u in unclaimed}),
                "events": sum(u.event_count for u in unclaimed),
            }
            manifest["warnings"] = [*manifest.get("warnings", []),
                                    usage_without_contract_warning(unclaimed)]
        return manifest

    def _context(self, cycle_date: date, manifest: dict[str, Any]) -> BillingContext:
        sources, retired = context_sources(manifest)
        return BillingContext(
            cycle_date=cycle_date,
            watermarks={m: datetime.fromisoformat(t) for m, t in manifest["watermarks"].items()},
            log_position=int(manifest["log_position"]),
            notes_from=notes_from(manifest.get("acknowledged_usage", ())),
            assigned_usage=assigned_usage(manifest.get("assigned_usage", ())),
            watermark_sources=sources,
            retired_sources=retired,
        )

    def _book_size(self) -> int:
        return sum(len(c) for c in self._chunks(skip=set()))

    def _chunks(self, skip: set[str]) -> Iterator[list[str]]:
        after: str | None = None
        while True:
            page = self.app.store.contract_ids(after, self.chunk_size)
            if not page:
                return
            after = page[-1]
            todo = [cid for cid in page if cid not in skip]
            if todo:
                yield todo

    def _settle(
        self,
        run: BillingRun,
        contract_ids: list[str],
        ctx: BillingContext,
        dry_run: bool,
        report: RunReport,
    ) -> BillingRun:
        for _ in range(MAX_CHUNK_ATTEMPTS):
            outcomes, touched, events, invoices = self._bill_chunk(run, contract_ids, ctx)
            run.record_outcomes(outcomes, self._attempt)
            if dry_run:
                break
            try:
                # The events in the order the aggregates made them (the run's last); the
                # aggregates are given too, for their snapshots.
                self.app.save_tracked(*touched, run, tracking=None,
                                      events=[*events, *run.collect_events()])
            except IntegrityError:
                run, contract_ids = self._refused(run, contract_ids)
                continue
            break
        else:
            raise ConcurrentUpdate(
                f"batch {run.batch_id}: contracts {contract_ids[0]}..{contract_ids[-1]} "
                f"conflicted {MAX_CHUNK_ATTEMPTS} times with other writers; run it again"
            )
        report.record(outcomes, invoices)
        return run

    def _refused(
        self, run: BillingRun, contract_ids: list[str]
    ) -> tuple[BillingRun, list[str]]:
        """After another writer refused a chunk's save: the run as now recorded, and the
        chunk's contracts still to settle."""
        self._numbering = None
        # A little random wait, so two runs racing for the numbers stop colliding.
        time.sleep(random.uniform(0, 0.05))
        # Another run billed some of these contracts, took numbers or wrote to this batch:
        # reload everything and decide again from what is now recorded.
        run = self.app.repository.get(run.id)
        return run, _unsettled(run, contract_ids)

    def _save_async(
        self, writer: ThreadPoolExecutor, run: BillingRun, decided: _Decided
    ) -> _Saving:
        """Issue a decided chunk and hand its save to the writer thread."""
        left = set(_unsettled(run, decided.contract_ids))
        if len(left) < len(decided.contract_ids):
            # Another process on this batch id settled some of them since they were decided
            # (the run was reloaded): theirs, not to be recorded or reported again here.
            decided = replace(decided, contract_ids=[c for c in decided.contract_ids if c in left],
                              decided=[(c, d) for c, d in decided.decided if c in left])
        outcomes, touched, events, invoices = self._issue_chunk(run, decided)
        run.record_outcomes(outcomes, self._attempt)
        future = writer.submit(self.app.save_tracked, *touched, run, tracking=None,
                               events=[*events, *run.collect_events()])
        return _Saving(decided.contract_ids, run, future, outcomes, invoices)

    def _saved(self, saving: _Saving, ctx: BillingContext, report: RunReport) -> BillingRun:
        """Wait for a chunk's save; if another writer refused it, settle the chunk again."""
        try:
            saving.future.result()
        except IntegrityError:
            run, contract_ids = self._refused(saving.run, saving.contract_ids)
            return self._settle(run, contract_ids, ctx, False, report) if contract_ids else run
        report.record(saving.outcomes, saving.invoices)
        return saving.run

    def _bill_chunk(
        self, run: BillingRun, contract_ids: list[str], ctx: BillingContext
    ) -> tuple[list[ContractOutcome], list[Aggregate], list[Any], list[Any]]:
        """Decide a chunk: its outcomes, the aggregates it changed, their new events in order
        (already collected from them) and the `InvoiceIssued` events among those.

        An invoice is stored as its event alone: nothing in the run reads the aggregate.
        """
        return self._issue_chunk(run, self._decide_chunk(contract_ids, ctx))

    def _decide_chunk(self, contract_ids: list[str], ctx: BillingContext) -> _Decided:
        """What is due from each contract of a chunk (no numbers taken, nothing changed)."""
        contracts = self.app.contracts(contract_ids)
        for cid, contract in contracts.items():
            latest = contract.billed.cycle_date
            if latest is not None and latest > ctx.cycle_date:
                self._billed_later[cid] = latest
            elif (latest == ctx.cycle_date and contract.last_invoice
                  and contract.last_invoice[1] not in self._not_elsewhere):
                self._elsewhere[cid] = contract.last_invoice[1]
        siblings = self._siblings(list(contracts.values()))
        reads = MeterReads(self.app.store)
        usages = {cid: StoreUsage(self.app.store, contract, siblings.get(cid, []), reads,
                                  ctx.assigned_usage)
                  for cid, contract in contracts.items()}
        for cid, contract in contracts.items():
            plan(contract, ctx, usages[cid])
        reads.fetch()
        decided: list[tuple[str, ContractOutcome | InvoiceDue]] = []
        for cid in contract_ids:
            stored = contracts.get(cid)
            if stored is None:
                decided.append((cid, ContractOutcome(cid, Outcome.FAILED,
                                                     reason="contract is indexed but not stored")))
            else:
                decided.append((cid, decide(stored, ctx, usages[cid])))
        metered = self._read_unbilled_windows(self.app.store.metered_usage(
            sorted({c.customer_id for c in contracts.values()}), ctx.notes_from),
            contracts, siblings)
        notes: dict[str, dict[str, str]] = {}
        for cid, contract in contracts.items():
            usage, others = metered.get(contract.customer_id, {}), siblings.get(cid, [])
            found = {note: text for note, rule in _USAGE_RULES
                     if (text := rule(contract, others, usage))}
            if found:
                notes[cid] = found
        # Read last: every event the chunk read was logged at or before it (positions follow
        # commit order), so `batch verify` can bill the chunk again as of then.
        return _Decided(contract_ids, contracts, decided, notes,
                        self.app.store.max_notification_id())

    def _read_unbilled_windows(
        self, metered: dict[str, dict[str, MeteredUsage]], contracts: dict[str, Contract],
        siblings: dict[str, list[Contract]],
    ) -> dict[str, dict[str, MeteredUsage]]:
        """The metered usage with the events found in the windows no contract bills
        (`unbilled_windows`), read for the whole chunk in one round trip when there are any."""
        customers = {c.customer_id: c for c in reversed(contracts.values())}
        windows: list[UnbilledWindow] = []
        for customer_id, usage in metered.items():
            contract = customers[customer_id]
            windows.extend(unbilled_windows(
                [contract, *siblings.get(contract.contract_id, [])], usage))
        if not windows:
            return metered
        readings = self.app.store.read_meters(window_reads(windows, metered))
        found: dict[tuple[str, str], list[tuple[UnbilledWindow, int]]] = {}
        for window, reading in zip(windows, readings, strict=True):
            found.setdefault((window.customer_id, window.metric), []).append(
                (window, reading.event_count))
        return {customer_id: {
            metric: replace(u, in_unbilled_windows=tuple(found.get((customer_id, metric), ())))
            for metric, u in usage.items()} for customer_id, usage in metered.items()}

    def _issue_chunk(
        self, run: BillingRun, chunk: _Decided
    ) -> tuple[list[ContractOutcome], list[Aggregate], list[Any], list[Any]]:
        """Number and issue a decided chunk's invoices and settle its contracts."""
        contracts, decided = chunk.contracts, chunk.decided
        due = [(cid, d) for cid, d in decided if isinstance(d, InvoiceDue)]
        touched: list[Aggregate] = []
        events: list[Any] = []
        invoices: list[Any] = []
        numbers: list[str] = []
        if due:
            numbering = self._numbering or (
                self.app.get_or_none(INVOICE_NUMBERS_ID, InvoiceNumbers) or InvoiceNumbers()
            )
            self._numbering = numbering
            numbers = numbering.allocate(len(due), run.batch_id)
            touched.append(numbering)
            events.extend(numbering.collect_events())
        issued = dict(zip([cid for cid, _ in due], numbers, strict=True))
        outcomes: list[ContractOutcome] = []
        for cid, decision in decided:
            if not isinstance(decision, InvoiceDue):
                outcomes.append(decision)
                continue
            contract = contracts[cid]
            invoice = self._issue(contract, decision, issued[cid], run)
            contract.record_invoice(
                invoice_id=invoice.originator_id, number=invoice.number, batch_id=run.batch_id,
                settlement=decision.settlement,
            )
            events.extend(contract.collect_events())
            events.append(invoice)
            invoices.append(invoice)
            outcomes.append(ContractOutcome(
                cid, Outcome.INVOICED, invoice_id=str(invoice.originator_id),
                number=invoice.number, total=format_money(invoice.total, invoice.currency),
                currency=invoice.currency, uncounted_usage=decision.uncounted_usage,
            ))
        return [chunk.noted(o) for o in outcomes], touched, events, invoices

    def _siblings(self, contracts: list[Contract]) -> dict[str, list[Contract]]:
        """For each contract, the customer's other contracts (they may share usage)."""
        by_customer = self.app.store.customer_contract_ids(
            sorted({c.customer_id for c in contracts}))
        shared = {cid for ids in by_customer.values() if len(ids) > 1 for cid in ids}
        if not shared:
            return {}
        loaded = {c.contract_id: c for c in contracts if c.contract_id in shared}
        loaded.update(self.app.contracts(sorted(shared - set(loaded))))
        return {
            c.contract_id: [loaded[o] for o in by_customer[c.customer_id]
                            if o != c.contract_id and o in loaded]
            for c in contracts if c.contract_id in shared
        }

    def _issue(self, contract: Contract, due: InvoiceDue, number: str, run: BillingRun) -> Any:
        lines = list(due.lines)
        total = due.total
        return Invoice.issued(
            number=number,
            batch_id=run.batch_id,
            cycle_date=run.cycle_date,
            contract_id=contract.contract_id,
            customer_id=contract.customer_id,
            currency=contract.currency,
            issue_date=due.issue_date,
            due_date=due.due_date,
            document_type="credit_note" if total < 0 else "invoice",
            # Records of strings and basis values, JSON-native by their types.
            lines=JSONRecords(line.to_record() for line in lines),
            subtotals=subtotals(lines),
            total=total,
            contract_version=contract.version,
        )

    def _finish(self, run: BillingRun, report: RunReport, dry_run: bool) -> RunReport:
        report.billed_elsewhere = {
            cid: batch_id for cid, batch_id in sorted(self._elsewhere.items())
            if (o := report.outcomes.get(cid)) is not None and o.outcome is Outcome.NOT_DUE}
        # Those that have finished since ran beside this one; the others may still be running.
        unfinished = [b for b in self._unfinished
                      if (now := self.app.get_or_none(b.id, BillingRun)) is None
                      or now.finished_at is None]
        report.unfinished = [b.batch_id for b in unfinished]
        if unfinished:
            report.warnings.append(unfinished_warning(report, unfinished))
        beside = {b: n for b, n in report.billed_by().items() if b not in report.unfinished}
        if beside:
            report.warnings.append(billed_elsewhere_warning(report, beside))
        if self._billed_later:
            report.warnings.append(billed_later_warning(report.cycle_date, self._billed_later,
                                                        report.attempt))
        if report.invoices:
            report.backdated = BackDated.find(report, self.app.later_batches(report.cycle_date))
            if report.backdated:
                report.warnings.append(report.backdated.warning(report.attempt))
        for note in USAGE_NOTES:
            warning = notes_warning((getattr(o, note) for o in report.outcomes.values()),
                                    report.batch_id, dry_run)
            if warning:
                report.warnings.append(warning)
        if not dry_run:
            for _ in range(MAX_CHUNK_ATTEMPTS):
                run.finish(self.now(), run.counts())
                try:
                    self.app.save(run)
                    break
                except IntegrityError:
                    run = self.app.repository.get(run.id)
            report.batch_counts = run.counts()
        return report


def _unsettled(run: BillingRun, contract_ids: list[str]) -> list[str]:
    """Those of the contracts the batch has not settled: no outcome yet, or held or failed."""
    return [cid for cid in contract_ids if cid not in run.outcomes
            or run.outcomes[cid].outcome in (Outcome.HELD, Outcome.FAILED)]


def resume_command(cycle_date: date, batch_id: str) -> str:
    """The command that finishes an unfinished batch (or resumes one that is running)."""
    return f"billcycle run --cycle-date {cycle_date.isoformat()} --batch-id {batch_id}"


def unfinished_warning(report: RunReport, unfinished: list[BillingRun]) -> str:
    """Said by a run of a cycle date whose other batches had started and not finished when it
    started, nor since: each was interrupted, or is running still. Nothing tells which, so the
    run names them and how to finish them, and resumes none (docs/accounting.md, "Unfinished
    batches")."""
    day = report.cycle_date.isoformat()
    billed_by = report.billed_by()

    def said(b: BillingRun) -> str:
        billed = billed_by.get(b.batch_id)
        return f"started {b.started_at:%Y-%m-%d %H:%M:%S %Z}" + (
            f"; it invoiced {billed} of the contracts this run found not due" if billed else "")

    first = unfinished[0]
    if len(unfinished) == 1:
        named = f"batch {first.batch_id} of cycle date {day} ({said(first)}) never finished"
    else:
        listed = ", ".join(f"{b.batch_id} ({said(b)})" for b in unfinished)
        named = f"{len(unfinished)} batches of cycle date {day} never finished: {listed}"
    each = "it" if len(unfinished) == 1 else "each"
    likewise = "" if len(unfinished) == 1 else " (likewise with each other batch id)"
    command = resume_command(first.cycle_date, first.batch_id)
    return (f"{named}: interrupted, or still running; once {each} is not running, finish "
            f"{each} with `{command}`{likewise}; a resumed batch bills only what is still due, "
            "nothing twice")


def billed_elsewhere_warning(report: RunReport, by: dict[str, int]) -> str:
    """Said when batches of the cycle date that ran beside this one (finished since, or started
    since) invoiced contracts this run found nothing due for: two runs of one date at once."""
    count = sum(by.values())
    named = ", ".join(f"{n} by {b}" for b, n in by.items())
    batches = f"batch {next(iter(by))}" if len(by) == 1 else f"batches ({named})"
    day = report.cycle_date.isoformat()
    return (f"{count} contract(s) were invoiced by {batches} of the same cycle date {day}, "
            f"not by this batch {report.batch_id}: another run of {day} ran at the same time "
            "as this one (nothing was billed twice); they are counted here as not due; `billcycle "
            f"batch show {next(iter(by))}` lists its invoices")


# Running the next cycle a few days early is routine, and no monthly cycle date is more than
# 31 days ahead; beyond that a run bills a second period in advance, which is nearly always
# a typo (2027 for 2026) that gaplessly numbered invoices cannot take back.
FAR_AHEAD = timedelta(days=31)


def far_ahead_warning(report: RunReport, today: date) -> str | None:
    """Said when the cycle date is more than FAR_AHEAD after today (contract.md allows any D:
    warned, not refused): what the run bills before its time."""
    ahead = (report.cycle_date - today).days
    if ahead <= FAR_AHEAD.days:
        return None
    day = report.cycle_date.isoformat()
    count = len(report.invoices)
    issued = ("would be issued" if report.dry_run else "are issued") + f" on {day}"
    undo = ("check --cycle-date before running it without --dry-run" if report.dry_run else
            "if the date is a typo, they are reversed only by credit notes")
    return (f"cycle date {day} is {ahead} days after today ({today.isoformat()} UTC): the "
            f"{count} invoice(s) of this {report.attempt} {issued}, billing in advance every "
            f"in_advance period starting by {day} and every in_arrears period and milestone "
            f"ending by then, as though those days had come; {undo}")


def billed_later_warning(cycle_date: date, later: dict[str, date], attempt: str = "run") -> str:
    """Said when a run's cycle date is before one its contracts were already billed for: it
    bills only what was due by its date and not yet billed, likely little or nothing. A run
    may have been given the wrong date; a retry or a resume keeps its batch's."""
    latest = max(later.values())
    first = min(later)
    advice = ("check --cycle-date" if attempt == "run" else
              f"a {attempt} keeps its batch's cycle date: expected where a later batch billed "
              "what this one held")
    return (f"{len(later)} contract(s) were already billed for a later cycle date, up to "
            f"{latest.isoformat()} (e.g. {first}, {later[first].isoformat()}): a run bills "
            f"what was due by its cycle date {cycle_date.isoformat()} and not yet billed, so "
            f"this one bills little or nothing for them; {advice}")
