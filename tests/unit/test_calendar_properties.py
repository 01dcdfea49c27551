"""Properties of periods, proration and local days that must hold for every anchor and day."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.calendar import (
    ServicePeriod,
    boundary,
    local_date,
    local_midnight,
    period_containing,
    periods_overlapping,
    prorate,
)
from domain.terms import BillingFrequency

# Wide enough to cover leap years and centuries (2000 leap, 2100 not), far from year 1/9999.
days = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31))
frequencies = st.sampled_from(list(BillingFrequency))
amounts = st.decimals(
    min_value=Decimal("-1000000"), max_value=Decimal("1000000"), places=4, allow_nan=False
)
zones = st.sampled_from(
    [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "America/Santiago",
        "America/Havana",
        "America/Asuncion",
        "Asia/Tehran",
        "Asia/Kathmandu",
        "Pacific/Chatham",
        "Pacific/Kiritimati",
        "Pacific/Apia",
        "Australia/Lord_Howe",
    ]
)


def _anchor(year: int, month: int, day: int) -> date:
    """A month-end anchor even where the month is shorter than `day`."""
    while True:
        try:
            return date(year, month, day)
        except ValueError:
            day -= 1


anchors = days | st.builds(
    _anchor, st.integers(1990, 2060), st.integers(1, 12), st.integers(28, 31)
)


@given(anchors, frequencies, st.integers(-600, 600))
def test_consecutive_periods_tile_the_timeline(
    anchor: date, frequency: BillingFrequency, k: int
) -> None:
    this = ServicePeriod(boundary(anchor, frequency, k), boundary(anchor, frequency, k + 1))
    following = period_containing(anchor, frequency, this.end)
    assert following.start == this.end
    assert period_containing(anchor, frequency, this.end - timedelta(days=1)) == this
    assert period_containing(anchor, frequency, this.start) == this


@given(anchors, frequencies, st.integers(-600, 600))
def test_a_boundary_is_on_the_anchor_day_or_the_last_day_of_a_shorter_month(
    anchor: date, frequency: BillingFrequency, k: int
) -> None:
    day = boundary(anchor, frequency, k)
    if day.day != anchor.day:
        assert day.day < anchor.day
        assert (day + timedelta(days=1)).day == 1


@given(anchors, frequencies, days)
def test_the_period_containing_a_day_contains_it_and_has_a_sane_length(
    anchor: date, frequency: BillingFrequency, day: date
) -> None:
    period = period_containing(anchor, frequency, day)
    assert period.contains(day)
    low, high = {
        BillingFrequency.MONTHLY: (28, 31),
        BillingFrequency.QUARTERLY: (89, 92),
        BillingFrequency.ANNUAL: (365, 366),
    }[frequency]
    assert low <= period.days <= high


@given(anchors, frequencies, days, st.integers(0, 400), st.integers(0, 800))
def test_periods_overlapping_a_span_cover_it_without_gap_or_overlap(
    anchor: date, frequency: BillingFrequency, start: date, length: int, horizon: int
) -> None:
    end = start + timedelta(days=length)
    until = start + timedelta(days=horizon)
    periods = list(periods_overlapping(anchor, frequency, start, end, until))
    if length == 0:
        assert periods == []
        return
    assert periods[0].contains(start)
    for before, after in pairwise(periods):
        assert before.end == after.start
    for period in periods:
        assert period.start < end
        assert period.start <= until
    # Iteration stops only at the contract's end or at `until`, never early.
    assert periods[-1].end >= end or periods[-1].end > until


@given(anchors, frequencies, days, amounts, st.lists(st.integers(1, 400), max_size=6))
def test_prorated_pieces_of_a_period_sum_to_the_whole(
    anchor: date, frequency: BillingFrequency, day: date, amount: Decimal, offsets: list[int]
) -> None:
    full = period_containing(anchor, frequency, day)
    cuts = sorted({full.start + timedelta(days=o % full.days) for o in offsets} | {full.start})
    pieces = [ServicePeriod(a, b) for a, b in pairwise([*cuts, full.end])]
    total = sum((prorate(amount, piece, full) for piece in pieces), Decimal(0))
    # Exact but for Decimal's 28 significant digits per piece (a third is not a decimal).
    assert abs(total - amount) <= Decimal("1e-18")
    assert sum(piece.days for piece in pieces) == full.days


@settings(deadline=None)
@given(days.filter(lambda d: date(1970, 1, 1) <= d <= date(2037, 12, 31)), zones)
def test_local_midnight_is_the_first_instant_of_the_local_day(day: date, zone: str) -> None:
    start = local_midnight(day, zone)
    following = local_midnight(day + timedelta(days=1), zone)
    assert start <= following
    assert local_date(start - timedelta(seconds=1), zone) < day
    if start < following:
        assert local_date(start, zone) == day
        assert local_date(following - timedelta(seconds=1), zone) == day
