"""Revenue recognition schedules: ratable by calendar day, milestones at completion."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from domain.recognition import Schedule, month_end, schedule_for_line

D = Decimal


def line(kind: str, amount: str, start: str, end: str, **basis: Any) -> dict[str, Any]:
    return {"kind": kind, "amount": amount, "period_start": start, "period_end": end,
            "basis": basis}


def test_a_subscription_billed_in_advance_is_earned_day_by_day() -> None:
    s = schedule_for_line(line("subscription", "1000.00", "2026-11-01", "2026-12-01"), "USD",
                          issued_on=date(2026, 11, 1))
    assert s.recognized(date(2026, 10, 31)) == 0
    assert s.recognized(date(2026, 11, 1)) == D("33.33")  # day 1 of 30, all of it
    assert s.recognized(date(2026, 11, 15)) == D("500.00")
    assert s.recognized(date(2026, 11, 30)) == D("1000.00")
    assert s.deferred(date(2026, 11, 15)) == D("500.00")


def test_nothing_is_recognized_or_billed_before_the_issue_date() -> None:
    s = schedule_for_line(line("usage", "90.00", "2026-10-01", "2026-11-01"), "USD",
                          issued_on=date(2026, 11, 1))
    assert s.billed(date(2026, 10, 31)) == 0
    assert s.recognized(date(2026, 10, 31)) == 0
    # Service already delivered: recognized in full on the issue date (catch-up).
    assert s.recognized(date(2026, 11, 1)) == D("90.00")


def test_a_milestone_is_recognized_on_its_completion_date() -> None:
    s = schedule_for_line(
        line("milestone", "5000.00", "2026-10-10", "2026-10-11", completed_on="2026-10-10"),
        "USD", issued_on=date(2026, 10, 9))
    assert s.recognized(date(2026, 10, 9)) == 0
    assert s.recognized(date(2026, 10, 10)) == D("5000.00")


def test_daily_pieces_sum_exactly_and_the_remainder_is_spread() -> None:
    s = Schedule(D("100.00"), "USD", date(2026, 1, 1), date(2026, 1, 1), date(2026, 1, 4))
    pieces = [amount for _, amount in s.daily()]
    assert pieces == [D("33.33"), D("33.34"), D("33.33")]
    assert sum(pieces) == D("100.00")


def test_zero_decimal_currencies_split_in_whole_units() -> None:
    s = Schedule(D("1000"), "JPY", date(2026, 2, 1), date(2026, 2, 1), date(2026, 3, 1))
    pieces = [amount for _, amount in s.daily()]
    assert all(p == p.to_integral_value() for p in pieces)
    assert sum(pieces) == D("1000")


def test_a_credit_is_recognized_negatively_over_its_days() -> None:
    s = Schedule(D("-50.00"), "USD", date(2026, 11, 15), date(2026, 11, 15), date(2026, 12, 1))
    assert s.recognized(date(2026, 11, 30)) == D("-50.00")
    assert D("-50.00") < s.recognized(date(2026, 11, 20)) < 0


def test_close_dates_are_month_ends_and_the_last_day() -> None:
    s = Schedule(D("1200.00"), "USD", date(2026, 1, 15), date(2026, 1, 15), date(2027, 1, 15))
    ends = s.period_ends()
    assert ends[0] == date(2026, 1, 15) and ends[1] == date(2026, 1, 31)
    assert ends[-2:] == [date(2026, 12, 31), date(2027, 1, 14)]
    assert sum(a for _, a in s.pieces(ends)) == D("1200.00")


@pytest.mark.parametrize(("day", "end"), [
    (date(2026, 2, 10), date(2026, 2, 28)), (date(2028, 2, 1), date(2028, 2, 29)),
    (date(2026, 12, 31), date(2026, 12, 31)),
])
def test_month_end(day: date, end: date) -> None:
    assert month_end(day) == end


def test_an_empty_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Schedule(D("1"), "USD", date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 2))
