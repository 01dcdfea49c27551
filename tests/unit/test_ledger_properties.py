"""Properties of the journal over generated documents and payments."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.ledger import (
    Account,
    Document,
    DocumentPayment,
    EntryKind,
    JournalEntry,
    applied_by_date,
    as_of_recognition,
    balances,
    cash_entry,
    document_entries,
)
from domain.money import ZERO
from domain.recognition import Schedule

ISSUE = date(2026, 11, 1)
AS_OF = st.dates(min_value=date(2026, 10, 1), max_value=date(2028, 3, 1))


@st.composite
def documents(draw: st.DrawFn) -> Document:
    schedules = []
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        start = ISSUE + timedelta(days=draw(st.integers(min_value=-60, max_value=30)))
        days = draw(st.integers(min_value=1, max_value=366))
        cents = draw(st.integers(min_value=-500_000, max_value=2_000_000))
        schedules.append(Schedule(Decimal(cents).scaleb(-2), "USD", ISSUE, start,
                                  start + timedelta(days=days)))
    total = sum((s.amount for s in schedules), ZERO)
    kind = "credit_note" if total < 0 else "invoice"
    return Document("INV-000001", kind, "cus_1", "ct_1", "USD", ISSUE, tuple(schedules))


payments = st.lists(
    st.tuples(st.integers(min_value=1, max_value=2_000_000),
              st.integers(min_value=-10, max_value=200)),
    max_size=4,
)


def journal(doc: Document, paid: list[tuple[int, int]]) -> tuple[list[JournalEntry], Decimal]:
    entries = document_entries(doc)
    cash = [DocumentPayment(f"p{i}", ISSUE + timedelta(days=offset), i,
                            Decimal(cents).scaleb(-2), ZERO)
            for i, (cents, offset) in enumerate(paid)]
    parts = applied_by_date(doc.total, cash)
    for c in cash:
        entries.append(cash_entry(doc, EntryKind.PAYMENT, c.payment_id, c.amount, c.day,
                                  parts[c.payment_id]))
    return entries, doc.total - sum(parts.values(), ZERO)


@given(documents(), payments)
def test_every_entry_balances_and_the_open_amount_is_the_receivable(
    doc: Document, paid: list[tuple[int, int]]
) -> None:
    entries, open_amount = journal(doc, paid)
    for entry in entries:
        assert sum((p.amount for p in entry.postings), ZERO) == 0
    totals = balances(entries, date(2099, 1, 1))
    assert totals.get(("USD", Account.RECEIVABLE), ZERO) == open_amount
    assert open_amount >= min(doc.total, ZERO)


@given(documents(), AS_OF)
def test_billed_is_recognized_plus_deferred_at_any_date(doc: Document, as_of: date) -> None:
    entries = document_entries(doc)
    extra = as_of_recognition(doc, as_of)
    totals = balances([*entries, *([extra] if extra else [])], as_of)
    billed = doc.total if as_of >= ISSUE else ZERO
    recognized = -totals.get(("USD", Account.REVENUE), ZERO)
    deferred = -totals.get(("USD", Account.DEFERRED_REVENUE), ZERO)
    assert recognized == doc.recognized(as_of)
    assert billed == recognized + deferred
