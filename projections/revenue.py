"""Revenue: the recognition schedule of every invoice line, revenue by month, deferred revenue.

Follows Invoice.InvoiceIssued only. Each line's schedule (domain/recognition.py) is fixed when
the line is issued, so the view stores it whole: `revenue_lines` (the line, its service days)
and `revenue_schedule` (what it earns on each close date: the issue date, month ends, its last
day). What is recognized through a date is the sum of the pieces dated on or before it, plus,
for lines part-way through a month, the days since their last close date.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from domain.invoice import Invoice
from domain.ledger import Document
from domain.money import format_money
from domain.recognition import Schedule
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

ISSUED = event_class(Invoice, "InvoiceIssued")
ONE_DAY = timedelta(days=1)

LINES = Table(
    "revenue_lines",
    (("number", "TEXT"), ("line", "INTEGER"), ("document_type", "TEXT"),
     ("contract_id", "TEXT"), ("customer_id", "TEXT"), ("currency", "TEXT"), ("kind", "TEXT"),
     ("component_id", "TEXT"), ("issue_date", "TEXT"), ("service_start", "TEXT"),
     ("service_end", "TEXT"), ("amount", "BIGINT"), ("position", "BIGINT")),
    key=("number", "line"),
    report_indexes=(("issue_date",), ("service_end",)),
    append_only=True,
)
SCHEDULE = Table(
    "revenue_schedule",
    (("number", "TEXT"), ("line", "INTEGER"), ("day", "TEXT"), ("contract_id", "TEXT"),
     ("currency", "TEXT"), ("amount", "BIGINT")),
    key=("number", "line", "day"),
    report_indexes=(("day",),),
    append_only=True,
)


class RevenueProjection(ViewProjection):
    name = "revenue"
    topics = topics(ISSUED)
    tables = (LINES, SCHEDULE)

    def changes(self, events: Sequence[Positioned]) -> Changes:
        changes = Changes()
        lines, schedule = changes.inserted(LINES), changes.inserted(SCHEDULE)
        for event, position in events:
            # The event's fields once, not per line or piece.
            number, cur, contract = event.number, event.currency, event.contract_id
            kind, customer, issued = event.document_type, event.customer_id, event.issue_date
            issued_on = issued.isoformat()
            schedules = documents.of(event).schedules
            for i, (line, s) in enumerate(zip(event.lines, schedules, strict=True)):
                start, end, amount, pieces = _recognized(s)
                lines.append((
                    number, i, kind, contract, customer, cur, line["kind"],
                    line["component_id"], issued_on, start, end, amount, position,
                ))
                for day, piece in pieces:
                    schedule.append((number, i, day, contract, cur, piece))
        return changes


# A schedule's columns in the view: its period, amount and non-zero pieces on its close dates.
_Recognized = tuple[str, str, int, tuple[tuple[str, int], ...]]
# Per schedule, by identity (the entry holds it): documents share their lines' schedules
# (projection.documents), so each is worked out once. Emptied when full.
_RECOGNIZED: dict[int, tuple[Schedule, _Recognized]] = {}
_RECOGNIZED_LIMIT = 50_000


def _recognized(s: Schedule) -> _Recognized:
    found = _RECOGNIZED.get(id(s))
    if found is not None and found[0] is s:
        return found[1]
    if len(_RECOGNIZED) >= _RECOGNIZED_LIMIT:
        _RECOGNIZED.clear()
    cur = s.currency
    made = (s.start.isoformat(), s.end.isoformat(), to_minor(s.amount, cur),
            tuple((day.isoformat(), to_minor(piece, cur))
                  for day, piece in s.pieces(s.period_ends()) if piece))
    _RECOGNIZED[id(s)] = (s, made)
    return made


# --- reading ---------------------------------------------------------------------------------

Key = tuple[str, ...]  # (currency,) or (currency, contract_id)


@dataclass
class Figures:
    """Billed and recognized through a date, in minor units."""

    billed: int = 0
    recognized: int = 0

    @property
    def deferred(self) -> int:
        return self.billed - self.recognized


# PostgreSQL sums bigint as numeric; the cast keeps results integers on both databases.
_SUM = "CAST(SUM(amount) AS BIGINT)"


def _group(by_contract: bool) -> str:
    return "currency, contract_id" if by_contract else "currency"


def figures(select: Select, as_of: date, by_contract: bool = False) -> dict[Key, Figures]:
    """Billed, recognized and deferred at the end of `as_of`, per currency (and contract)."""
    group, day = _group(by_contract), as_of.isoformat()
    result: dict[Key, Figures] = {}
    for *group_key, billed in select(
            f"SELECT {group}, {_SUM} FROM revenue_lines WHERE issue_date <= ? GROUP BY {group}",
            (day,)):
        result.setdefault(tuple(group_key), Figures()).billed = billed
    for *group_key, recognized in select(
            f"SELECT {group}, {_SUM} FROM revenue_schedule WHERE day <= ? GROUP BY {group}",
            (day,)):
        result.setdefault(tuple(group_key), Figures()).recognized += recognized
    for key, units in _since_last_close(select, as_of, by_contract).items():
        result.setdefault(key, Figures()).recognized += units
    return result


# Lines issued by a date and part-way through their service on it.
_IN_PROGRESS = "issue_date <= ? AND service_start <= ? AND service_end > ?"


def _in_progress(as_of: date) -> tuple[str, str, str]:
    day = as_of.isoformat()
    return day, day, (as_of + ONE_DAY).isoformat()


def _schedule(currency: str, issued: str, start: str, end: str, amount: int) -> Schedule:
    return Schedule(from_minor(amount, currency), currency, date.fromisoformat(issued),
                    date.fromisoformat(start), date.fromisoformat(end))


def _since_last_close(select: Select, as_of: date, by_contract: bool) -> dict[Key, int]:
    """Revenue earned by lines part-way through their month: since their last close date."""
    earned: dict[Key, int] = {}
    for currency, contract, issued, start, end, amount in select(
            "SELECT currency, contract_id, issue_date, service_start, service_end, amount"
            f" FROM revenue_lines WHERE {_IN_PROGRESS}", _in_progress(as_of)):
        s = _schedule(currency, issued, start, end, amount)
        closed = max(d for d in s.period_ends() if d <= as_of)
        units = to_minor(s.recognized(as_of) - s.recognized(closed), currency)
        if units:
            key = (currency, contract) if by_contract else (currency,)
            earned[key] = earned.get(key, 0) + units
    return earned


def by_month(select: Select, as_of: date) -> dict[str, dict[str, int]]:
    """Per currency, revenue recognized in each calendar month through `as_of`."""
    months: dict[str, dict[str, int]] = {}
    for currency, month, units in select(
            f"SELECT currency, substr(day, 1, 7) AS month, {_SUM} FROM revenue_schedule"
            " WHERE day <= ? GROUP BY currency, month ORDER BY currency, month",
            (as_of.isoformat(),)):
        months.setdefault(currency, {})[month] = units
    for (currency,), units in _since_last_close(select, as_of, False).items():
        month = as_of.isoformat()[:7]
        months.setdefault(currency, {})[month] = months[currency].get(month, 0) + units
    return months


def money_figures(f: Figures, currency: str) -> dict[str, str]:
    """Billed, recognized and deferred as money strings of the currency."""
    return {k: format_money(from_minor(v, currency), currency)
            for k, v in (("billed", f.billed), ("recognized", f.recognized),
                         ("deferred", f.deferred))}


def revenue_report(select: Select, as_of: date) -> dict[str, dict[str, Any]]:
    """`report revenue --json`: per currency billed, recognized and deferred, revenue by month
    and the month's deferred revenue roll-forward."""
    opening_day = as_of.replace(day=1) - ONE_DAY
    now, opening = figures(select, as_of), figures(select, opening_day)
    months = by_month(select, as_of)
    report = {}
    for (currency,), f in sorted(now.items()):
        o = opening.get((currency,), Figures())

        def money(units: int, cur: str = currency) -> str:
            return format_money(from_minor(units, cur), cur)

        report[currency] = {
            **money_figures(f, currency),
            "by_month": {m: money(u) for m, u in months.get(currency, {}).items()},
            "roll_forward": {
                "from": (opening_day + ONE_DAY).isoformat(),
                "through": as_of.isoformat(),
                "opening_deferred": money(o.deferred),
                "billed": money(f.billed - o.billed),
                "recognized": money(f.recognized - o.recognized),
                "closing_deferred": money(f.deferred),
            },
        }
    return report


def documents_in_progress(select: Select, as_of: date) -> list[Document]:
    """Documents with a line part-way through its month at `as_of`, with all their lines."""
    rows = select(
        "SELECT number, document_type, customer_id, contract_id, currency, issue_date,"
        " service_start, service_end, amount FROM revenue_lines WHERE number IN"
        f" (SELECT number FROM revenue_lines WHERE {_IN_PROGRESS}) ORDER BY number, line",
        _in_progress(as_of))
    docs: dict[str, Document] = {}
    for number, kind, customer, contract, currency, issued, start, end, amount in rows:
        doc = docs.get(number) or Document(number, kind, customer, contract, currency,
                                           date.fromisoformat(issued), ())
        schedule = _schedule(currency, issued, start, end, amount)
        docs[number] = replace(doc, schedules=(*doc.schedules, schedule))
    return list(docs.values())
