"""The accounts receivable journal: balanced double-entry entries for invoices, credit notes,
payments and the recognition of deferred revenue. Pure: no clock, no I/O.

Debits are positive and credits negative, as in a Beancount ledger; every entry sums to zero
in its one currency. An issued document debits the receivable with its total and credits
revenue with what is already earned on its issue date (see domain/recognition.py) and
deferred revenue with the rest. A credit note is the same entry with the signs reversed by its
negative amounts. A periodic close moves deferred revenue to revenue at every month end and on
the last day of each schedule. A payment debits cash; the part that settles the document's
open amount credits the receivable and any excess credits a customer credit liability, so a
payment never takes a document's open amount below zero. Payments settle a document in the
order of their days: one dated before a payment already applied is applied first, and the
later one's settling part is reapplied on its own day. A refund credits cash and debits what
was held for the customer: a credit note's open amount first, then customer credit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cached_property

from domain.calendar import local_date
from domain.money import ZERO
from domain.recognition import Schedule, close_dates


class Account(StrEnum):
    RECEIVABLE = "Assets:Receivable"
    CASH = "Assets:Cash"
    DEFERRED_REVENUE = "Liabilities:DeferredRevenue"
    CUSTOMER_CREDIT = "Liabilities:CustomerCredit"
    REVENUE = "Income:Revenue"


class EntryKind(StrEnum):
    ISSUE = "issue"
    RECOGNITION = "recognition"
    PAYMENT = "payment"
    REFUND = "refund"


class UnbalancedEntry(ValueError):
    """A journal entry whose postings do not sum to zero: a bug, never data to keep."""


@dataclass(frozen=True)
class Posting:
    account: Account
    amount: Decimal  # debit positive, credit negative


@dataclass(frozen=True)
class JournalEntry:
    entry_id: str
    day: date
    kind: EntryKind
    document: str  # invoice or credit note number
    customer_id: str
    currency: str
    narration: str
    postings: tuple[Posting, ...]

    def __post_init__(self) -> None:
        total = ZERO
        for p in self.postings:
            total += p.amount
        if total != ZERO:
            raise UnbalancedEntry(
                f"journal entry {self.entry_id}: postings sum to {total} {self.currency}, not 0"
            )


@dataclass(frozen=True)
class Document:
    """An issued invoice or credit note as the ledger sees it: its lines' schedules."""

    number: str
    document_type: str
    customer_id: str
    contract_id: str
    currency: str
    issue_date: date
    schedules: tuple[Schedule, ...]

    @cached_property
    def total(self) -> Decimal:
        return sum((s.amount for s in self.schedules), ZERO)

    def recognized(self, as_of: date) -> Decimal:
        total = ZERO
        for s in self.schedules:
            total += s.recognized(as_of)
        return total

    def recognition_dates(self) -> list[date]:
        """The close dates after issue on which some line of this document earns revenue."""
        dates: set[date] = set()
        for s in self.schedules:
            dates.update(close_dates(s.issued_on, s.last_day))
        return sorted(d for d in dates if d > self.issue_date)

    @cached_property
    def earned_on_issue(self) -> Decimal:
        """Recognized by the end of the issue date: the issue entry and the close both need it."""
        return self.recognized(self.issue_date)


def _entry(doc: Document, entry_id: str, day: date, kind: EntryKind, narration: str,
           postings: Iterable[Posting]) -> JournalEntry:
    return JournalEntry(
        entry_id=entry_id, day=day, kind=kind, document=doc.number,
        customer_id=doc.customer_id, currency=doc.currency, narration=narration,
        postings=tuple(p for p in postings if p.amount != ZERO),
    )


def issue_entry(doc: Document) -> JournalEntry:
    """Receivable against revenue earned by the issue date and deferred revenue for the rest."""
    earned = doc.earned_on_issue
    label = "credit note" if doc.document_type == "credit_note" else "invoice"
    return _entry(
        doc, f"{doc.number}/issue", doc.issue_date, EntryKind.ISSUE,
        f"{label} {doc.number} to {doc.customer_id} (contract {doc.contract_id})",
        [
            Posting(Account.RECEIVABLE, doc.total),
            Posting(Account.REVENUE, -earned),
            Posting(Account.DEFERRED_REVENUE, earned - doc.total),
        ],
    )


def _recognition(doc: Document, day: date, amount: Decimal, as_of: bool = False) -> JournalEntry:
    tag, iso = "/as-of" if as_of else "", day.isoformat()
    return _entry(
        doc, f"{doc.number}/recognition{tag}/{iso}", day, EntryKind.RECOGNITION,
        f"revenue recognized on {doc.number} through {iso}{' (as of)' * as_of}",
        [Posting(Account.DEFERRED_REVENUE, amount), Posting(Account.REVENUE, -amount)],
    )


def recognition_entries(doc: Document) -> list[JournalEntry]:
    """The periodic close of the document: one entry per close date that earns revenue."""
    entries = []
    before = doc.earned_on_issue
    for day in doc.recognition_dates():
        through = doc.recognized(day)
        if through != before:
            entries.append(_recognition(doc, day, through - before))
        before = through
    return entries


def as_of_recognition(doc: Document, as_of: date) -> JournalEntry | None:
    """Revenue earned since the last close date on or before `as_of`, posted on `as_of`.

    With it, the journal through `as_of` shows exactly what is recognized at the end of that
    day, also between month ends.
    """
    if as_of < doc.issue_date:
        return None
    closed = max([doc.issue_date, *(d for d in doc.recognition_dates() if d <= as_of)])
    amount = doc.recognized(as_of) - doc.recognized(closed)
    return None if amount == ZERO else _recognition(doc, as_of, amount, as_of=True)


def document_entries(doc: Document) -> list[JournalEntry]:
    """Everything the issue of a document puts in the journal: its issue and its close."""
    return [issue_entry(doc), *recognition_entries(doc)]


def posting_day(instant: datetime, timezone: str, issue_date: date) -> date:
    """The day the journal posts money that moved at `instant` (a payment received, a refund
    paid) on a document issued on `issue_date`: the local day in the contract's `timezone`,
    or the issue date if earlier (a receivable cannot be settled before it exists)."""
    return max(local_date(instant, timezone), issue_date)


# How a narration names the customer of a payment (money from it) and of a refund (to it), and
# what one dated earlier does first when it arrives after others.
_TOWARD = {EntryKind.PAYMENT: "from", EntryKind.REFUND: "to"}
_FIRST = {EntryKind.PAYMENT: "settles the document first",
          EntryKind.REFUND: "draws on the credit note first"}


def cash_entry(doc: Document, kind: EntryKind, cash_id: str, amount: Decimal, day: date,
               part: Decimal, because: str | None = None) -> JournalEntry:
    """A payment's cash received against the document, or a refund's paid back to the
    customer (its postings a payment's reversed), on `day`, its `posting_day`: `part` settles
    what the document owes (a refund's: is paid of a credit note's open amount, which the
    receivable holds), as `applied_by_date` splits it, and the rest is customer credit. With
    `because` (one dated earlier that arrived after it), a reapplication: no cash, its part
    changed by `part`."""
    entry_id = f"{doc.number}/{kind}/{cash_id}"
    narration = f"{kind} {cash_id} {_TOWARD[kind]} {doc.customer_id} on {doc.number}"
    if because is not None:
        entry_id += f"/reapplied/{because}"
        narration += f" reapplied: {because}, dated earlier, {_FIRST[kind]}"
    rest = amount - part
    if kind is EntryKind.REFUND:
        amount, part, rest = -amount, -part, -rest
    return _entry(doc, entry_id, day, kind, narration, [
        Posting(Account.CASH, amount),
        Posting(Account.RECEIVABLE, -part),
        Posting(Account.CUSTOMER_CREDIT, -rest),
    ])


def reapplication_entry(doc: Document, kind: EntryKind, cash: DocumentPayment, part: Decimal,
                        because: str) -> JournalEntry:
    """A payment's part settling the document (a refund's: paid of the credit note) changed
    from `cash.applied` to `part`, because one dated earlier arrived after it (`because`):
    posted on its own day, the difference moves between the receivable and customer credit."""
    return cash_entry(doc, kind, cash.payment_id, ZERO, cash.day, part - cash.applied, because)


@dataclass(frozen=True)
class DocumentPayment:
    """A payment as applied to a document: its cash, and the part of it settling the document
    (the rest is customer credit)."""

    payment_id: str
    day: date  # posted on: received, or the issue date if received earlier
    position: int  # in the log: orders payments of the same day
    amount: Decimal
    applied: Decimal


def applied_by_date(total: Decimal, payments: Iterable[DocumentPayment]) -> dict[str, Decimal]:
    """The part of each payment that settles the document when payments are taken in the order
    of their days (log order within a day): a payment dated before another settles what the
    document owed first, whichever arrived first, so the reports of any day agree with the
    payments dated by then. Refunds draw on a credit note's amount (`total`) the same way:
    the part of each paid of the credit note, the rest being customer credit."""
    owed = total
    applied: dict[str, Decimal] = {}
    for p in sorted(payments, key=lambda p: (p.day, p.position)):
        applied[p.payment_id] = min(p.amount, max(owed, ZERO))
        owed -= applied[p.payment_id]
    return applied


def reapplied_by(total: Decimal, cash: Sequence[DocumentPayment], cash_id: str
                 ) -> tuple[dict[str, Decimal], list[DocumentPayment]]:
    """What the ledger posts when `cash_id`, one of `cash`, is applied to a document: the part
    of each of `cash` that settles `total` (`applied_by_date`), and the others whose part that
    changed (one dated later, applied before it): each gets a reapplication entry
    (`reapplication_entry`) on its own day."""
    after = applied_by_date(total, cash)
    before = applied_by_date(total, [c for c in cash if c.payment_id != cash_id])
    return after, [c for c in cash
                   if c.payment_id != cash_id and after[c.payment_id] != before[c.payment_id]]


def balances(entries: Sequence[JournalEntry], as_of: date) -> dict[tuple[str, Account], Decimal]:
    """(currency, account) balances of the entries dated on or before `as_of`."""
    totals: dict[tuple[str, Account], Decimal] = {}
    for entry in entries:
        if entry.day <= as_of:
            for p in entry.postings:
                key = (entry.currency, p.account)
                totals[key] = totals.get(key, ZERO) + p.amount
    return totals


@dataclass(frozen=True)
class Receivable:
    """A document's open amount at some date, as AR aging and dunning see it (minor units:
    positive an invoice's, negative a credit note's)."""

    number: str
    customer_id: str
    currency: str
    issue_date: str  # ISO dates: they order as the dates do
    due_date: str
    open: int


def credit_notes_applied(receivables: Iterable[Receivable]) -> dict[str, int]:
    """The part of each document's open amount that the customer's credit notes settle: a
    customer's open credit notes (oldest first) settle its open invoices in the same currency,
    the oldest due first; negative for the credit notes' parts used.

    Nothing moves between accounts (both are receivable), so the journal has no entry for it:
    the rule is applied when a date's open items are read, after the payments dated by then,
    which settle the invoices they name first. The amounts of a customer and currency sum to
    zero, so AR totals and the receivable balance are the same with it or without it.
    """
    invoices: dict[tuple[str, str], list[Receivable]] = {}
    credits: dict[tuple[str, str], list[Receivable]] = {}
    for r in receivables:
        if r.open:
            (invoices if r.open > 0 else credits).setdefault((r.customer_id, r.currency),
                                                             []).append(r)
    applied: dict[str, int] = {}
    for key, notes in credits.items():
        owed = sorted(invoices.get(key, ()), key=lambda r: (r.due_date, r.issue_date, r.number))
        remaining = [r.open for r in owed]
        i = 0
        for note in sorted(notes, key=lambda r: (r.issue_date, r.number)):
            credit = -note.open
            while credit and i < len(owed):
                part = min(credit, remaining[i])
                applied[owed[i].number] = applied.get(owed[i].number, 0) + part
                applied[note.number] = applied.get(note.number, 0) - part
                remaining[i] -= part
                credit -= part
                if not remaining[i]:
                    i += 1
    return applied
