"""Collections: the process that starts and ends collection schedules, and their view.

The process follows the log like a projection, but what it makes is events: an invoice issued
for more than zero starts a `Collection` (domain/collections.py) with the schedule of the
policy in force, and with the payments on the invoice that follow it in the same page of the
log (the collection is saved after the page: after them); each later payment is noted on it,
and the payment that settles the invoice ends it. Refunds are noted too, and payments after
the end, so that the collection's outstanding amount is the invoice's balance. The new events
are saved with the process's tracking in one transaction, in the billing application's own
log, where downstream consumers find them next to the invoice events. The view then follows
those Collection events like any other projection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, ProcessRecorder, Tracking

from domain.application import BillingApplication
from domain.collections import Collection, CollectionPolicy, Payment, collection_id
from domain.invoice import Invoice
from domain.money import ZERO, format_money
from projections import ledger
from projections.persistence import Changes, Select, Table
from projections.projection import (
    Positioned,
    ViewProjection,
    event_class,
    from_minor,
    to_minor,
    topics,
)

ISSUED = event_class(Invoice, "InvoiceIssued")
PAID = event_class(Invoice, "PaymentApplied")
REFUNDED = event_class(Invoice, "RefundPaid")
STARTED = event_class(Collection, "Started")
NOTED = event_class(Collection, "PaymentNoted")
REFUND_NOTED = event_class(Collection, "RefundNoted")
ENDED = event_class(Collection, "Ended")
RECORDED = event_class(Collection, "ActionRecorded")
WRITTEN = topics(STARTED, NOTED, REFUND_NOTED, ENDED)  # by the collections process
# How many refunds a read of those the process passed before it noted refunds takes at once.
PASSED_REFUNDS_PAGE = 5000


class CollectionsProcess:
    """Invoice events in, Collection events out: tracked in the application's own recorder."""

    name = "collections-process"
    topics = topics(ISSUED, PAID, REFUNDED)
    writes = WRITTEN  # the views reading these follow it, not beside it

    def __init__(self, app: BillingApplication, policy: CollectionPolicy) -> None:
        self.app = app
        self.policy = policy
        # The position of this process in the log it follows (which is also the log it
        # writes to), kept in the application's tracking table under a name of its own. The
        # process of billcycle versions that did not note refunds kept it under
        # `<app>:collections`, and read past the refunds up to there.
        self.tracking_name = f"{app.name}:collections:refunds"
        self.before_refunds = f"{app.name}:collections"
        self.noting_refunds = False  # known to have saved under tracking_name

    def position(self) -> int:
        recorder = cast(ProcessRecorder, self.app.recorder)
        found = recorder.max_tracking_id(self.tracking_name)
        if found is None:  # where the process of an earlier version stopped, if anywhere
            return recorder.max_tracking_id(self.before_refunds) or 0
        return found

    def process(self, events: Sequence[Positioned], tracking: Tracking, after: int) -> None:
        self._save([*self._refunds_passed(after), *events], tracking.notification_id)

    def note_passed_refunds(self) -> int:
        """Note the refunds the process of an earlier billcycle read past, now, even with
        nothing new in the log to take the process further: how many were noted.

        Otherwise they were noted only with the process's next page, once something new was
        logged, and counted with none (QA10 F5)."""
        at = self.position()
        passed = self._refunds_passed(at)
        if self.noting_refunds or not at:  # nothing passed: tracked by this version, or new
            return 0
        try:
            # With none passed, the position still moves to `tracking_name`: not asked again.
            self._save(passed, at)
        except IntegrityError:  # another billcycle noted them first
            return 0
        return len(passed)

    def _save(self, events: Sequence[Positioned], through: int) -> None:
        """Start, note and end the collections the events reach; saved with the process's
        position `through`, in one transaction."""
        touched: dict[UUID, Collection] = {}
        numbers = self._numbers(events)
        # The collections the page's payments and refunds reach, in one read (not one each).
        stored = self.app.load_many(sorted({
            collection_id(numbers[e.originator_id]) for e, _ in events
            if not isinstance(e, ISSUED)}))
        # The page's payments by invoice: a collection started here starts after them in the
        # log, so it starts with them already applied (collection.started then states what
        # is still unpaid); noting them again below changes nothing.
        paid: dict[UUID, list[Payment]] = {}
        for event, _ in events:
            if isinstance(event, PAID):
                paid.setdefault(event.originator_id, []).append(
                    Payment(event.payment_id, event.amount, event.received_at))
        for event, _ in events:
            if isinstance(event, ISSUED):
                if event.document_type == "invoice" and event.total > ZERO:
                    c = Collection.start(
                        invoice_number=event.number, customer_id=event.customer_id,
                        contract_id=event.contract_id, currency=event.currency,
                        amount=event.total, due_date=event.due_date,
                        steps=self.policy.schedule(event.due_date),
                        paid_before=paid.get(event.originator_id, ()),
                    )
                    touched[c.id] = c
                continue
            cid = collection_id(numbers[event.originator_id])
            found = touched.get(cid) or cast(Collection | None, stored.get(cid))
            if found is None:  # credit notes and zero invoices have no collection
                continue
            if isinstance(event, PAID):
                found.note_payment(event.payment_id, event.amount, event.received_at)
            else:
                found.note_refund(event.refund_id, event.amount, event.paid_at)
            touched[cid] = found
        aggregates: list[Aggregate] = list(touched.values())
        self.app.save_tracked(*aggregates, tracking=Tracking(self.tracking_name, through))
        self.noting_refunds = True

    def _refunds_passed(self, after: int) -> list[Positioned]:
        """The refunds in the log through `after` that the process of an earlier billcycle
        read past without noting them (it tracked under `before_refunds`), in log order:
        this version notes them first (`note_passed_refunds`, or its first page before the
        page's own events)."""
        recorder = cast(ProcessRecorder, self.app.recorder)
        if self.noting_refunds or not after:
            return []
        if recorder.max_tracking_id(self.tracking_name) is not None:
            self.noting_refunds = True
            return []
        passed: list[Positioned] = []
        while True:
            found = recorder.select_notifications(
                start=passed[-1][1] if passed else 0, limit=PASSED_REFUNDS_PAGE, stop=after,
                topics=list(topics(REFUNDED)), inclusive_of_start=False)
            passed.extend((self.app.mapper.to_domain_event(n), n.id) for n in found)
            if len(found) < PASSED_REFUNDS_PAGE:
                return passed

    def _numbers(self, events: Sequence[Positioned]) -> dict[UUID, str]:
        """Invoice numbers by invoice id for the payments and refunds: issued in the batch or
        before."""
        numbers = {e.originator_id: e.number for e, _ in events if isinstance(e, ISSUED)}
        wanted = [e.originator_id for e, _ in events
                  if not isinstance(e, ISSUED) and e.originator_id not in numbers]
        for invoice_id, stored in self.app.store.first_versions(wanted).items():
            issued: Any = self.app.mapper.to_domain_event(stored)
            numbers[invoice_id] = issued.number
        return numbers


COLLECTIONS = Table(
    "collections",
    (("number", "TEXT"), ("collection_id", "TEXT"), ("customer_id", "TEXT"),
     ("contract_id", "TEXT"), ("currency", "TEXT"), ("amount", "BIGINT"), ("paid", "BIGINT"),
     ("refunded", "BIGINT"), ("due_date", "TEXT"), ("status", "TEXT"), ("ended_reason", "TEXT"),
     ("ended_at", "TEXT"), ("position", "BIGINT")),
    key=("number",),
    indexes=(("collection_id",),),
)
STEPS = Table(
    "collection_steps",
    (("number", "TEXT"), ("step", "TEXT"), ("kind", "TEXT"), ("due_on", "TEXT"),
     ("recorded_on", "TEXT")),
    key=("number", "step"),
    report_indexes=(("due_on",),),
)


class CollectionsProjection(ViewProjection):
    name = "collections"
    topics = topics(STARTED, NOTED, REFUND_NOTED, ENDED, RECORDED)
    tables = (COLLECTIONS, STEPS)

    def changes(self, events: Sequence[Positioned]) -> Changes:
        changes = Changes()
        rows = self._rows(events)
        for event, position in events:
            cid = str(event.originator_id)
            if isinstance(event, STARTED):
                # (Started events of earlier versions have no payments.)
                paid_before = sum(to_minor(amount, event.currency)
                                  for amount in (getattr(event, "payments", None) or {}).values())
                rows[cid] = [event.invoice_number, cid, event.customer_id, event.contract_id,
                             event.currency, to_minor(event.amount, event.currency),
                             paid_before, 0,
                             event.due_date.isoformat(), "open", None, None, position]
                for s in event.steps:
                    changes.put(STEPS, (event.invoice_number, s["step"], s["kind"],
                                        s["due_on"], None), new=True)
                continue
            row = rows[cid]
            row[12] = position
            if isinstance(event, NOTED):
                row[6] += to_minor(event.amount, row[4])
            elif isinstance(event, REFUND_NOTED):
                row[7] += to_minor(event.amount, row[4])
            elif isinstance(event, ENDED):
                row[9:12] = ["ended", event.reason, event.received_at.isoformat()]
            elif isinstance(event, RECORDED):
                changes.put(STEPS, (row[0], event.step, event.kind, event.due_on,
                                    event.recorded_on.isoformat()), new=False)
        started = {str(e.originator_id) for e, _ in events if isinstance(e, STARTED)}
        for cid, row in rows.items():
            changes.put(COLLECTIONS, tuple(row), new=cid in started)
        return changes

    def _rows(self, events: Sequence[Positioned]) -> dict[str, list[Any]]:
        started = {str(e.originator_id) for e, _ in events if isinstance(e, STARTED)}
        wanted = sorted({str(e.originator_id) for e, _ in events} - started)
        if not wanted:
            return {}
        marks = ", ".join("?" for _ in wanted)
        found = self.view.select(f"SELECT * FROM collections WHERE collection_id IN ({marks})",
                                 wanted)
        return {row[1]: _refunded_or_zero(list(row)) for row in found}


# --- reading and recording -------------------------------------------------------------------


@dataclass(frozen=True)
class DueAction:
    number: str
    customer_id: str
    contract_id: str
    currency: str
    outstanding: int  # minor units
    due_date: str
    step: str
    kind: str
    due_on: str
    customer_owes: int | None = None  # net, minor units: see projections.ledger.dunning_figures
    # Of the outstanding amount, the part the customer's credit notes settle (minor units):
    # see domain.ledger.credit_notes_applied.
    credited: int | None = None

    def to_collect(self) -> str | None:
        """What a reminder asks for: the outstanding amount less what credit notes settle."""
        if self.credited is None:
            return None
        return format_money(from_minor(self.outstanding - self.credited, self.currency),
                            self.currency)

    def to_json(self, as_of: date) -> dict[str, Any]:
        money = {k: format_money(from_minor(getattr(self, k), self.currency), self.currency)
                 for k in ("outstanding", "customer_owes", "credited")
                 if getattr(self, k) is not None}
        asked = self.to_collect()
        to_collect = {} if asked is None else {"to_collect": asked}
        return {
            **self.__dict__,
            **money,
            **to_collect,
            "days_overdue": (as_of - date.fromisoformat(self.due_date)).days,
        }


def covered_by_credit(actions: Sequence[DueAction], owe: Mapping[tuple[str, str], int],
                      credited: Mapping[str, int]) -> tuple[list[DueAction], list[DueAction]]:
    """The actions to send, and those withheld, each with what its customer owes net in the
    currency and what of its invoice the customer's credit notes settle (`credited`, by
    number): withheld where those credit notes settle the invoice's outstanding amount, or
    where the customer owes nothing net (its credit notes and customer credit cover its open
    invoices). A reminder must not chase money the customer does not owe."""
    send: list[DueAction] = []
    withheld: list[DueAction] = []
    for action in actions:
        net = owe.get((action.customer_id, action.currency), 0)
        part = credited.get(action.number, 0)
        told = replace(action, customer_owes=net, credited=part)
        (send if net > 0 and part < action.outstanding else withheld).append(told)
    return send, withheld


def _refunded_or_zero(row: list[Any]) -> list[Any]:
    """A collections row with `refunded` 0 where it is NULL: an older billcycle still
    following the log when this one rebuilt the view with the column writes rows without
    it (a rolling upgrade); such a collection had no refund noted by then."""
    if row[7] is None:
        row[7] = 0
    return row


# How many invoice numbers one read of their steps names (SQLite allows 999 parameters).
NUMBERS_PER_READ = 500


def due_actions(select: Select, as_of: date, open_amounts: Mapping[str, int],
                sent_by: date | None = None) -> list[DueAction]:
    """The actions whose day has come by `as_of` and that were not sent by the end of
    `sent_by` (by default `as_of`), of the invoices in `open_amounts`, each with its amount
    open there (minor units) as its outstanding amount."""
    sent = (sent_by or as_of).isoformat()
    numbers = sorted(open_amounts)
    rows: list[Any] = []
    for start in range(0, len(numbers), NUMBERS_PER_READ):
        chunk = numbers[start:start + NUMBERS_PER_READ]
        rows += select(
            "SELECT c.number, c.customer_id, c.contract_id, c.currency, c.due_date, s.step,"
            " s.kind, s.due_on FROM collection_steps s JOIN collections c ON c.number = s.number"
            f" WHERE s.number IN ({', '.join('?' for _ in chunk)}) AND s.due_on <= ?"
            " AND (s.recorded_on IS NULL OR s.recorded_on > ?)",
            (*chunk, as_of.isoformat(), sent))
    return [
        DueAction(number, customer, contract, currency, open_amounts[number], due_date, step,
                  kind, due_on)
        for number, customer, contract, currency, due_date, step, kind, due_on
        in sorted(rows, key=lambda r: (r[7], r[0], r[5]))  # due on, invoice, step
    ]


@dataclass(frozen=True)
class Listing:
    """The actions due by a day, to send and withheld, and the invoices open then (amounts by
    number, minor units, before credit notes)."""

    send: list[DueAction]
    withheld: list[DueAction]
    open: Mapping[str, int]


def listing(collections: Select, ledger_select: Select, as_of: date,
            judged_on: date | None = None) -> Listing:
    """The actions whose day has come by `as_of`, judged on the books at the end of
    `judged_on` (by default `as_of`): an invoice's outstanding amount is what the payments
    and refunds dated by then left open and an action is due until it was sent by then
    (QA L4). So collections as of a past day are AR aging's open invoices of that day, with
    the same amounts, not what has been paid since; the collection's own state (`status`,
    `paid`) is today's."""
    judged_on = judged_on or as_of
    figures = ledger.dunning_figures(ledger_select, judged_on)
    actions = due_actions(collections, as_of, figures.open, judged_on)
    send, withheld = covered_by_credit(actions, figures.owes, figures.credited)
    return Listing(send, withheld, figures.open)


def still_standing(then: Listing, now: Listing, as_of: date
                   ) -> tuple[list[DueAction], list[tuple[DueAction, str]]]:
    """Of the actions to send as of `as_of` (`then`), those to record, the same on everything
    the books hold (`now`: the same actions judged on the books' last day), and the others
    with why not: an action recorded as sent on `as_of` must not chase an invoice paid,
    credited or reminded since."""
    sending = {(a.number, a.step): a for a in now.send}
    withheld = {(a.number, a.step) for a in now.withheld}
    record: list[DueAction] = []
    changed: list[tuple[DueAction, str]] = []
    for action in then.send:
        key = (action.number, action.step)
        found = sending.get(key)
        if found is not None and (found.outstanding, found.credited) == (
                action.outstanding, action.credited):
            record.append(action)
        elif action.number not in now.open:
            changed.append((action, f"paid since {as_of}: nothing is open on it now"))
        elif key in withheld:
            changed.append((action, f"withheld now: credit notes or customer credit dated "
                                    f"after {as_of} cover it"))
        elif found is not None:
            changed.append((action, f"to collect {found.to_collect()} now, not "
                                    f"{action.to_collect()}: payments, refunds or credit "
                                    f"notes dated after {as_of}"))
        else:  # open now, and the step not due now: it was recorded since
            changed.append((action, f"recorded as sent after {as_of}"))
    return record, changed


MAX_RECORD_ATTEMPTS = 10


def record_actions(app: BillingApplication, actions: Sequence[DueAction], on: date) -> int:
    """Record the actions as sent on `on`, once each; the number newly recorded."""
    for _ in range(MAX_RECORD_ATTEMPTS):
        # The actions' collections in one read, not one per action (again after a conflict).
        loaded = app.load_many(sorted({collection_id(a.number) for a in actions}))
        for action in actions:
            c = cast(Collection | None, loaded.get(collection_id(action.number)))
            if c is not None:
                c.record_action(action.step, on)
        pending = [c for c in loaded.values() if c.pending_events]
        recorded = sum(len(c.pending_events) for c in pending)
        try:
            app.save(*pending)
        except IntegrityError:
            continue  # a payment (or another recorder) changed one of them: load again
        return recorded
    raise IntegrityError(
        f"recording {len(actions)} collection actions conflicted {MAX_RECORD_ATTEMPTS} times "
        "with other writers; run it again"
    )
