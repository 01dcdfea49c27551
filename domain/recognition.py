"""Revenue recognition: one schedule per invoice line (ASC 606 / IFRS 15, billed basis).

Service lines (subscription, usage, proration, late_usage, minimum_true_up) are recognized
ratably by calendar day over their service period `[period_start, period_end)`; milestone
lines at a point in time, the day the milestone completed. Nothing is recognized before the
line is billed: service delivered before the issue date is recognized on the issue date
(a catch-up), so at any date billed = recognized + deferred.

Amounts split by cumulative rounding: what is recognized through day k of n is
`round_money(amount * k / n)`, and a day's (or a month's) piece is the difference of two such
figures. The pieces therefore sum exactly to the line amount in minor units, and the
remainder of the division lands deterministically on the days where the rounded cumulative
figure steps up. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from domain.invoice_lines import LineKind
from domain.money import ZERO, round_money

ONE_DAY = timedelta(days=1)

POINT_IN_TIME_KINDS = frozenset({LineKind.MILESTONE})
# The same as plain strings: a line record's kind is one, and enum members hash in Python.
_KIND_VALUES = frozenset(k.value for k in LineKind)
_POINT_IN_TIME_VALUES = frozenset(k.value for k in POINT_IN_TIME_KINDS)


@dataclass(frozen=True)
class Schedule:
    """When one billed line's amount becomes revenue: ratably over the days `[start, end)`."""

    amount: Decimal
    currency: str
    issued_on: date
    start: date
    end: date  # exclusive; start + 1 day for a point-in-time line
    # Derived once: recognized() runs for every line on every close date of a replay.
    days: int = field(init=False, repr=False, compare=False)
    last_day: date = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(
                f"recognition schedule {self.start}..{self.end} is empty; end must be after start"
            )
        object.__setattr__(self, "days", (self.end - self.start).days)
        object.__setattr__(self, "last_day", self.end - ONE_DAY)

    def billed(self, as_of: date) -> Decimal:
        """The line amount once issued (on or before `as_of`), else zero."""
        return self.amount if self.issued_on <= as_of else ZERO

    def recognized(self, as_of: date) -> Decimal:
        """Revenue recognized by the end of day `as_of` (zero before the line is issued)."""
        if as_of < self.issued_on:
            return ZERO
        served = (as_of - self.start).days + 1
        if served >= self.days:
            return self.amount
        if served < 0:
            served = 0
        return round_money(self.amount * served / self.days, self.currency)

    def deferred(self, as_of: date) -> Decimal:
        """Billed but not yet recognized at the end of `as_of`."""
        return self.billed(as_of) - self.recognized(as_of)

    def pieces(self, dates: list[date]) -> list[tuple[date, Decimal]]:
        """Revenue recognized on each of `dates` (ascending): the step since the previous one.

        The first date takes everything recognized by then; together the pieces come to
        `recognized(dates[-1])`, exactly.
        """
        pieces = []
        before = ZERO
        for day in dates:
            through = self.recognized(day)
            pieces.append((day, through - before))
            before = through
        return pieces

    def daily(self) -> list[tuple[date, Decimal]]:
        """The day-by-day pieces from the issue date (which takes the catch-up) to the last day."""
        first = max(self.issued_on, self.start)
        days = [first + timedelta(days=i) for i in range((self.last_day - first).days + 1)]
        return self.pieces(days or [self.issued_on])

    def period_ends(self) -> list[date]:
        """The dates a periodic close posts recognition for this line: the issue date, every
        month end after it within the schedule, and the schedule's last day."""
        return list(close_dates(self.issued_on, self.last_day))


# A book has few distinct issue dates and service periods, and a replay asks for the same
# ones for every line: both functions are pure, so their answers are kept.
@lru_cache(maxsize=4096)
def month_end(day: date) -> date:
    """The last day of `day`'s month."""
    following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - ONE_DAY


@lru_cache(maxsize=4096)
def close_dates(issued_on: date, last_day: date) -> tuple[date, ...]:
    """The issue date, every month end after it and before `last_day`, and `last_day` (when
    after the issue date), ascending: month by month, not day by day."""
    dates = [issued_on]
    year, month = issued_on.year, issued_on.month
    day = month_end(issued_on)
    while day < last_day:
        if day > issued_on:
            dates.append(day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        day = month_end(date(year, month, 1))
    if last_day > issued_on:
        dates.append(last_day)
    return tuple(dates)


def schedule_for_line(line: Mapping[str, Any], currency: str, issued_on: date) -> Schedule:
    """The schedule of one line record of an InvoiceIssued event."""
    kind = line["kind"]
    if kind not in _KIND_VALUES:
        LineKind(kind)  # raises, naming the unknown kind
    start = date.fromisoformat(line["period_start"])
    end = date.fromisoformat(line["period_end"])
    if kind in _POINT_IN_TIME_VALUES:
        basis = line.get("basis") or {}
        completed = basis.get("completed_on")
        start = date.fromisoformat(completed) if completed else start
        end = start + ONE_DAY
    return Schedule(
        amount=Decimal(line["amount"]),
        currency=currency,
        issued_on=issued_on,
        start=start,
        end=max(end, start + ONE_DAY),
    )
