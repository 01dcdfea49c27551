"""Properties of recognition schedules over generated lines."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.money import minor_units
from domain.recognition import Schedule

CURRENCIES = st.sampled_from(["USD", "JPY", "KWD", "EUR"])
DAYS = st.dates(min_value=date(2024, 1, 1), max_value=date(2028, 12, 31))


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    currency = draw(CURRENCIES)
    places = minor_units(currency)
    minor = draw(st.integers(min_value=-10**9, max_value=10**9))
    start = draw(DAYS)
    days = draw(st.integers(min_value=1, max_value=400))
    issued = start + timedelta(days=draw(st.integers(min_value=-40, max_value=days + 40)))
    amount = Decimal(minor).scaleb(-places)
    return Schedule(amount, currency, issued, start, start + timedelta(days=days))


@given(schedules())
def test_daily_pieces_sum_exactly_to_the_line_amount(s: Schedule) -> None:
    pieces = s.daily()
    assert sum(a for _, a in pieces) == s.amount
    places = minor_units(s.currency)
    assert all(a == a.quantize(Decimal(1).scaleb(-places)) for _, a in pieces)


@given(schedules())
def test_close_pieces_sum_exactly_to_the_line_amount(s: Schedule) -> None:
    assert sum(a for _, a in s.pieces(s.period_ends())) == s.amount


@given(schedules(), DAYS)
def test_billed_is_recognized_plus_deferred(s: Schedule, as_of: date) -> None:
    assert s.billed(as_of) == s.recognized(as_of) + s.deferred(as_of)
    assert abs(s.recognized(as_of)) <= abs(s.amount)


@given(schedules(), DAYS, DAYS)
def test_recognition_never_runs_backwards(s: Schedule, a: date, b: date) -> None:
    early, late = sorted([a, b])
    if s.amount >= 0:
        assert s.recognized(early) <= s.recognized(late)
    else:
        assert s.recognized(early) >= s.recognized(late)


def _close_dates_day_by_day(s: Schedule) -> list[date]:
    """The close dates as first written: stepping from month end to month end by days."""
    def month_end(day: date) -> date:
        return (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)

    dates = {s.issued_on}
    day = month_end(s.issued_on)
    while day < s.last_day:
        if day > s.issued_on:
            dates.add(day)
        day = month_end(day + timedelta(days=1))
    dates.add(max(s.last_day, s.issued_on))
    return sorted(dates)


@given(schedules())
def test_close_dates_by_month_arithmetic_are_the_day_by_day_ones(s: Schedule) -> None:
    assert s.period_ends() == _close_dates_day_by_day(s)
