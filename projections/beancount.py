"""The AR journal as a Beancount ledger, for `bean-check` and any tool that reads Beancount.

Through an as-of date the ledger holds every journal entry dated on or before it plus, for
documents part-way through a month on that date, an entry recognizing revenue since their last
close date: its account balances are then exactly the AR aging and revenue reports of the same
date (Assets:Receivable = AR total; -Income:Revenue = recognized;
-Liabilities:DeferredRevenue = deferred). Without a date it holds the whole journal, every
month-end close included.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date
from itertools import groupby
from typing import Any

from domain.ledger import Account, as_of_recognition
from domain.money import format_money
from projections.ledger import entry_rows, journal_rows
from projections.persistence import Select
from projections.projection import from_minor
from projections.revenue import documents_in_progress

# Row = (entry_id, line, day, kind, document, customer_id, currency, account, amount, narration)
_Row = tuple[Any, ...]


def _quoted(text: str) -> str:
    cleaned = " ".join(text.split())
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _transaction(rows: Sequence[_Row]) -> list[str]:
    entry_id, _, day, kind, document, customer, currency, _, _, narration = rows[0]
    lines = [
        f"{day} * {_quoted(narration)}",
        f"  entry: {_quoted(entry_id)}",
        f"  kind: {_quoted(kind)}",
        f"  document: {_quoted(document)}",
        f"  customer: {_quoted(customer)}",
    ]
    lines.extend(
        f"  {account}  {format_money(from_minor(amount, currency), currency)} {currency}"
        for *_, account, amount, _ in rows
    )
    return lines


def export(ledger: Select, revenue: Select, as_of: date | None) -> Iterator[str]:
    """The Beancount ledger, line by line."""
    rows = journal_rows(ledger, as_of)
    if as_of is not None:
        extra = [as_of_recognition(doc, as_of) for doc in documents_in_progress(revenue, as_of)]
        rows.extend(row for entry in extra if entry is not None for row in entry_rows(entry))
        rows.sort(key=lambda r: (r[2], r[0], r[1]))
    opened = min((r[2] for r in rows), default="1970-01-01")
    yield ";; billcycle accounts receivable journal" + (
        f" through {as_of.isoformat()}" if as_of else "")
    yield 'option "title" "billcycle AR subledger"'
    yield ""
    for account in Account:
        yield f"{opened} open {account.value}"
    for _, postings in groupby(rows, key=lambda r: r[0]):
        yield ""
        yield from _transaction(list(postings))
