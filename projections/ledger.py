"""The accounts receivable subledger: the journal, open items per document, and AR aging.

Follows Contract.Created (for the contract's timezone, in which a payment's date is read),
Invoice.InvoiceIssued, Invoice.PaymentApplied and Invoice.RefundPaid (a refund is a row of
ledger_payments). The accounting is domain/ledger.py's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from domain.contract import Contract
from domain.invoice import Invoice
from domain.ledger import (
    Account,
    Document,
    DocumentPayment,
    EntryKind,
    JournalEntry,
    Receivable,
    cash_entry,
    credit_notes_applied,
    document_entries,
    posting_day,
    reapplication_entry,
    reapplied_by,
)
from domain.money import ZERO, format_money, round_money
from projections.persistence import Changes, Select, Table
from projections.projection import (
    Positioned,
    ViewProjection,
    documents,
    event_class,
    from_minor,
    to_minor,
    topics,
)

CREATED = event_class(Contract, "Created")
ISSUED = event_class(Invoice, "InvoiceIssued")
PAID = event_class(Invoice, "PaymentApplied")
REFUNDED = event_class(Invoice, "RefundPaid")

CONTRACTS = Table(
    "ledger_contracts",
    (("contract_id", "TEXT"), ("customer_id", "TEXT"), ("timezone", "TEXT")),
    key=("contract_id",),
)
DOCUMENTS = Table(
    "ledger_documents",
    (("number", "TEXT"), ("invoice_id", "TEXT"), ("document_type", "TEXT"),
     ("contract_id", "TEXT"), ("customer_id", "TEXT"), ("currency", "TEXT"),
     ("issue_date", "TEXT"), ("due_date", "TEXT"), ("total", "BIGINT"), ("applied", "BIGINT"),
     ("position", "BIGINT"), ("payments", "TEXT"), ("refunds", "TEXT")),
    key=("number",),
    indexes=(("invoice_id",),),
    report_indexes=(("issue_date",),),
)
PAYMENTS = Table(
    "ledger_payments",
    (("number", "TEXT"), ("payment_id", "TEXT"), ("day", "TEXT"), ("currency", "TEXT"),
     ("amount", "BIGINT"), ("applied", "BIGINT"), ("excess", "BIGINT"),
     ("received_at", "TEXT"), ("position", "BIGINT")),
    key=("number", "payment_id"),
    report_indexes=(("day",),),
    append_only=True,
)
JOURNAL = Table(
    "ledger_journal",
    (("entry_id", "TEXT"), ("line", "INTEGER"), ("day", "TEXT"), ("kind", "TEXT"),
     ("document", "TEXT"), ("customer_id", "TEXT"), ("currency", "TEXT"), ("account", "TEXT"),
     ("amount", "BIGINT"), ("narration", "TEXT")),
    key=("entry_id", "line"),
    report_indexes=(("day",),),
    append_only=True,
)


# A payment applied to a document, as its row keeps it: (day posted, log position, payment
# id, amount, the part settling the document), amounts in minor units.
_Paid = tuple[str, int, str, int, int]


@dataclass
class _Open:
    """A document as a payment needs it: who, when, how much of it is settled, and by which
    payments (a payment dated before them is applied first)."""

    doc: Document
    due_date: str
    total: int
    applied: int
    position: int
    payments: list[_Paid] = field(default_factory=list)
    refunds: list[_Paid] = field(default_factory=list)  # the part paid of a credit note

    def row(self, invoice_id: str) -> tuple[Any, ...]:
        d = self.doc
        return (d.number, invoice_id, d.document_type, d.contract_id, d.customer_id, d.currency,
                d.issue_date.isoformat(), self.due_date, self.total, self.applied,
                self.position, json.dumps(self.payments) if self.payments else None,
                json.dumps(self.refunds) if self.refunds else None)


def entry_rows(entry: JournalEntry) -> list[tuple[Any, ...]]:
    """The entry's postings as rows of the journal table."""
    # The entry's fields once, not per posting; `_value_` is the member's plain string (the
    # `value` property goes through the enum's descriptor on every access).
    entry_id, day, kind = entry.entry_id, entry.day.isoformat(), entry.kind._value_
    document, customer, currency = entry.document, entry.customer_id, entry.currency
    narration = entry.narration
    return [
        (entry_id, i, day, kind, document, customer, currency, p.account._value_,
         to_minor(p.amount, currency), narration)
        for i, p in enumerate(entry.postings)
    ]


class LedgerProjection(ViewProjection):
    name = "ledger"
    topics = topics(CREATED, ISSUED, PAID, REFUNDED)
    tables = (CONTRACTS, DOCUMENTS, PAYMENTS, JOURNAL)

    def changes(self, events: Sequence[Positioned]) -> Changes:
        changes = Changes()
        journal = changes.inserted(JOURNAL)
        docs, zones = self._load(events)
        for event, position in events:
            if isinstance(event, CREATED):
                zones[event.contract_id] = event.timezone
                changes.put(CONTRACTS, (event.contract_id, event.customer_id, event.timezone),
                            new=True)
            elif isinstance(event, ISSUED):
                doc = documents.of(event)  # made once per event, shared with revenue
                total = to_minor(doc.total, doc.currency)
                state = _Open(doc, event.due_date.isoformat(), total, 0, position)
                invoice_id = str(event.originator_id)
                docs[invoice_id] = state
                changes.put(DOCUMENTS, state.row(invoice_id), new=True)
                for entry in document_entries(doc):
                    journal.extend(entry_rows(entry))
            elif isinstance(event, PAID):
                self._cash(docs, zones, event, EntryKind.PAYMENT, event.payment_id,
                           event.received_at, position, changes)
            elif isinstance(event, REFUNDED):
                self._cash(docs, zones, event, EntryKind.REFUND, event.refund_id,
                           event.paid_at, position, changes)
        return changes

    def _cash(self, docs: dict[str, _Open], zones: dict[str, str], event: Any,
              kind: EntryKind, cash_id: str, instant: datetime, position: int,
              changes: Changes) -> None:
        """A payment, or a refund: the part of it settling the document (a refund's: paid of a
        credit note's amount) and the rest, customer credit, the payments (refunds) taken in
        the order of their days (domain/ledger.py: reapplied_by); one already posted whose
        part changes (one dated earlier arrived later) is reapplied on its own day. A row in
        ledger_payments each; a refund's with the cash paid out and the parts negative."""
        invoice_id = str(event.originator_id)
        state = docs[invoice_id]
        doc, currency = state.doc, state.doc.currency
        refund = kind is EntryKind.REFUND
        sign, posted = (-1, state.refunds) if refund else (1, state.payments)
        # A payment settles what an invoice owes; a refund draws on what a credit note holds.
        total = max(-state.total, 0) if refund else state.total
        amount = round_money(event.amount, currency)
        day = posting_day(instant, zones.get(doc.contract_id, "UTC"), doc.issue_date)
        before = [DocumentPayment(cid, date.fromisoformat(d), pos, from_minor(c, currency),
                                  from_minor(part, currency))
                  for d, pos, cid, c, part in posted]
        parts, changed = reapplied_by(
            from_minor(total, currency),
            [*before, DocumentPayment(cash_id, day, position, amount, ZERO)], cash_id)
        moved = {c.payment_id for c in changed}
        journal = changes.inserted(JOURNAL)
        for i, c in enumerate(before):
            if c.payment_id not in moved:
                continue
            change = to_minor(parts[c.payment_id] - c.applied, currency)
            journal.extend(entry_rows(reapplication_entry(
                doc, kind, c, parts[c.payment_id], cash_id)))
            d, pos, cid, moved_cash, part = posted[i]
            posted[i] = (d, pos, cid, moved_cash, part + change)
            state.applied += sign * change
            changes.insert(PAYMENTS, (doc.number, f"{cid}/reapplied/{cash_id}", d, currency, 0,
                                      sign * change, -sign * change, instant.isoformat(),
                                      position))
        cash, part = to_minor(amount, currency), to_minor(parts[cash_id], currency)
        journal.extend(entry_rows(cash_entry(doc, kind, cash_id, amount, day, parts[cash_id])))
        posted.append((day.isoformat(), position, cash_id, cash, part))
        state.applied += sign * part
        changes.put(DOCUMENTS, state.row(invoice_id), new=False)
        changes.insert(PAYMENTS, (doc.number, cash_id, day.isoformat(), currency, sign * cash,
                                  sign * part, sign * (cash - part), instant.isoformat(),
                                  position))

    def _load(self, events: Sequence[Positioned]) -> tuple[dict[str, _Open], dict[str, str]]:
        """What the payments of this batch need from before it: the documents they pay (unless
        issued in the batch) and the timezones of those documents' contracts."""
        issued = {str(e.originator_id): e.contract_id for e, _ in events if isinstance(e, ISSUED)}
        created = {e.contract_id for e, _ in events if isinstance(e, CREATED)}
        paid = {str(e.originator_id) for e, _ in events if isinstance(e, PAID | REFUNDED)}
        docs: dict[str, _Open] = {}
        for (invoice_id, number, kind, customer, contract, currency, issued_on, due, total,
             applied, position, payments, refunds) in self._select_in(
                "SELECT invoice_id, number, document_type, customer_id, contract_id, currency,"
                " issue_date, due_date, total, applied, position, payments, refunds FROM"
                " ledger_documents WHERE invoice_id IN ({})", paid - set(issued)):
            doc = Document(number, kind, customer, contract, currency,
                           date.fromisoformat(issued_on), ())
            docs[invoice_id] = _Open(doc, due, total, applied, position,
                                     [tuple(p) for p in json.loads(payments or "[]")],
                                     [tuple(r) for r in json.loads(refunds or "[]")])
        contracts = {d.doc.contract_id for d in docs.values()}
        contracts |= {issued[i] for i in paid & set(issued)}
        zones = dict(self._select_in(
            "SELECT contract_id, timezone FROM ledger_contracts WHERE contract_id IN ({})",
            contracts - created))
        return docs, zones

    def _select_in(self, statement: str, keys: set[str]) -> list[tuple[Any, ...]]:
        """The rows of `statement` whose `IN ({})` list is `keys` (none for no keys)."""
        if not keys:
            return []
        marks = ", ".join("?" for _ in keys)
        return self.view.select(statement.format(marks), sorted(keys))


# --- reading ---------------------------------------------------------------------------------

AGING_BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")


def aging_bucket(days_past_due: int) -> str:
    if days_past_due <= 0:
        return "current"
    if days_past_due <= 30:
        return "1-30"
    if days_past_due <= 60:
        return "31-60"
    if days_past_due <= 90:
        return "61-90"
    return "90+"


_OPEN_ITEMS = (
    "SELECT d.number, d.document_type, d.customer_id, d.contract_id, d.currency,"
    " d.issue_date, d.due_date, d.total,"
    " d.total - CAST(COALESCE((SELECT SUM(p.applied) FROM ledger_payments p"
    "  WHERE p.number = d.number AND p.day <= ?), 0) AS BIGINT) AS open"
    " FROM ledger_documents d WHERE d.issue_date <= ? ORDER BY d.number"
)


@dataclass(frozen=True)
class OpenItem:
    number: str
    document_type: str
    customer_id: str
    contract_id: str
    currency: str
    issue_date: str
    due_date: str
    total: int  # minor units
    open: int  # minor units, at the end of the as-of day
    days_past_due: int
    # Of the open amount before it, the part the customer's credit notes settle (minor units;
    # negative on a credit note: its part used). domain/ledger.py: credit_notes_applied.
    credited: int = 0

    @property
    def bucket(self) -> str:
        return aging_bucket(self.days_past_due)

    def to_json(self) -> dict[str, Any]:
        money = {k: format_money(from_minor(getattr(self, k), self.currency), self.currency)
                 for k in ("total", "open", "credited")}
        return {**self.__dict__, **money, "days_past_due": max(self.days_past_due, 0),
                "bucket": self.bucket}


def open_items(select: Select, as_of: date) -> list[OpenItem]:
    """Documents issued by `as_of` with an amount still open at the end of that day: what the
    payments dated by then left, less what the customer's credit notes settle."""
    rows = _paid_to_date(select, as_of)
    credited = _credited(rows)
    items = []
    for number, kind, customer, contract, currency, issued, due, total, open_ in rows:
        settled = credited.get(number, 0)
        if open_ != settled:
            items.append(OpenItem(number, kind, customer, contract, currency, issued, due,
                                  total, open_ - settled, (as_of - date.fromisoformat(due)).days,
                                  settled))
    return items


def _paid_to_date(select: Select, as_of: date) -> list[tuple[Any, ...]]:
    """The documents issued by `as_of` that the payments dated by then left open."""
    day = as_of.isoformat()
    return [row for row in select(_OPEN_ITEMS, (day, day)) if row[8] != 0]


def _credited(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    return credit_notes_applied(
        Receivable(number, customer, currency, issued, due, open_)
        for number, _, customer, _, currency, issued, due, _, open_ in rows)


def ar_aging(items: list[OpenItem]) -> dict[str, dict[str, str]]:
    """Per currency, the open amounts by days past due, and their total."""
    sums: dict[str, dict[str, int]] = {}
    for item in items:
        buckets = sums.setdefault(item.currency, dict.fromkeys((*AGING_BUCKETS, "total"), 0))
        buckets[item.bucket] += item.open
        buckets["total"] += item.open
    return {
        currency: {k: format_money(from_minor(v, currency), currency) for k, v in buckets.items()}
        for currency, buckets in sorted(sums.items())
    }


def zero(currency: str) -> str:
    """Zero in the currency's minor units: "0.00", JPY "0", KWD "0.000"."""
    return format_money(from_minor(0, currency), currency)


def nothing_open(currency: str) -> dict[str, str]:
    """The aging of a currency with no open amounts (one with customer credit only)."""
    return {k: zero(currency) for k in (*AGING_BUCKETS, "total")}


@dataclass(frozen=True)
class DunningFigures:
    """What dunning checks at the end of a day, in minor units (`dunning_figures`)."""

    # Per customer and currency, what the customer owes net.
    owes: dict[tuple[str, str], int]
    # Per document, the part of what it has open that the customer's credit notes settle.
    credited: dict[str, int]
    # Per invoice with something open, what the payments dated by then left, before
    # credit notes: what its collection has outstanding that day.
    open: dict[str, int]


def dunning_figures(select: Select, as_of: date) -> DunningFigures:
    """What dunning checks at the end of `as_of`, from one read of the documents: per
    customer and currency what the customer owes net (its open invoices, less its open
    credit notes and the customer credit it holds: customer credit is not applied to
    invoices), per document the part of what the payments dated by then left open that the
    customer's credit notes settle, in full or not (domain/ledger.py: credit_notes_applied),
    and per invoice what they left open: the same figures as AR aging's of that day."""
    rows = _paid_to_date(select, as_of)
    net: dict[tuple[str, str], int] = {}
    # Before the credit notes settle anything: what they settle sums to zero per customer
    # and currency, so the net is the same.
    for _, _, customer, _, currency, _, _, _, open_ in rows:
        net[(customer, currency)] = net.get((customer, currency), 0) + open_
    for key, held in _credit_held(select, as_of).items():
        net[key] = net.get(key, 0) + held
    owing = {number: open_ for number, kind, *_, open_ in rows
             if kind == "invoice" and open_ > 0}
    return DunningFigures(net, _credited(rows), owing)


def customer_credit(select: Select, as_of: date) -> dict[str, str]:
    """Per currency, the customer credit held at the end of `as_of` (payments beyond what
    their documents owed): owed to customers, so not receivable and not aged."""
    totals: dict[str, int] = {}
    for (_, currency), held in _credit_held(select, as_of).items():
        totals[currency] = totals.get(currency, 0) + held
    return {currency: format_money(from_minor(-total, currency), currency)
            for currency, total in sorted(totals.items()) if total}


def _credit_held(select: Select, as_of: date) -> dict[tuple[str, str], int]:
    """Per customer and currency, the balance of customer credit at the end of `as_of` (minor
    units; a credit, so negative)."""
    return {(customer, currency): int(held or 0) for customer, currency, held in select(
        "SELECT customer_id, currency, CAST(SUM(amount) AS BIGINT) FROM ledger_journal"
        " WHERE account = ? AND day <= ? GROUP BY customer_id, currency",
        (Account.CUSTOMER_CREDIT.value, as_of.isoformat()))}


def journal_rows(select: Select, as_of: date | None) -> list[tuple[Any, ...]]:
    """Journal lines dated on or before `as_of` (all when None), entry by entry in date order."""
    statement = ("SELECT entry_id, line, day, kind, document, customer_id, currency, account,"
                 " amount, narration FROM ledger_journal")
    params: tuple[str, ...] = ()
    if as_of is not None:
        statement += " WHERE day <= ?"
        params = (as_of.isoformat(),)
    return select(statement + " ORDER BY day, entry_id, line", params)
