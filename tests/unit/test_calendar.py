"""Service periods, anchors, proration and local days, scenario by scenario."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from domain.calendar import (
    ServicePeriod,
    UnknownTimezone,
    boundary,
    is_known_timezone,
    local_date,
    local_midnight,
    period_containing,
    periods_overlapping,
    prorate,
)
from domain.money import round_money
from domain.terms import BillingFrequency

MONTHLY = BillingFrequency.MONTHLY
QUARTERLY = BillingFrequency.QUARTERLY
ANNUAL = BillingFrequency.ANNUAL


def d(text: str) -> date:
    return date.fromisoformat(text)


def period(start: str, end: str) -> ServicePeriod:
    return ServicePeriod(d(start), d(end))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- ServicePeriod ------------------------------------------------------------------------


def test_a_period_is_half_open_and_counts_calendar_days() -> None:
    february = period("2023-02-01", "2023-03-01")
    assert february.days == 28
    assert february.contains(d("2023-02-01"))
    assert february.contains(d("2023-02-28"))
    assert not february.contains(d("2023-03-01"))
    assert not february.contains(d("2023-01-31"))


def test_overlap_is_the_shared_days_or_none() -> None:
    october = period("2026-10-01", "2026-11-01")
    assert october.overlap(period("2026-10-15", "2026-12-01")) == period("2026-10-15", "2026-11-01")
    assert october.overlap(period("2026-09-01", "2026-12-01")) == october
    # Touching periods share no day: the end is exclusive.
    assert october.overlap(period("2026-11-01", "2026-12-01")) is None
    assert october.overlap(period("2026-01-01", "2026-02-01")) is None


def test_an_empty_period_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        period("2026-10-01", "2026-10-01")
    with pytest.raises(ValueError, match="empty"):
        period("2026-10-02", "2026-10-01")


def test_periods_sort_by_start() -> None:
    later, earlier = period("2026-11-01", "2026-12-01"), period("2026-10-01", "2026-11-01")
    assert sorted([later, earlier]) == [earlier, later]


# --- boundaries ---------------------------------------------------------------------------


def test_monthly_anchor_on_the_31st_clamps_each_month_without_drifting() -> None:
    anchor = d("2023-01-31")
    assert [boundary(anchor, MONTHLY, k) for k in range(6)] == [
        d("2023-01-31"),
        d("2023-02-28"),
        d("2023-03-31"),
        d("2023-04-30"),
        d("2023-05-31"),
        d("2023-06-30"),
    ]


def test_monthly_anchor_on_the_31st_reaches_february_29_in_a_leap_year() -> None:
    assert boundary(d("2024-01-31"), MONTHLY, 1) == d("2024-02-29")
    assert boundary(d("2024-01-31"), MONTHLY, 2) == d("2024-03-31")


def test_monthly_anchor_on_leap_day_keeps_the_29th() -> None:
    anchor = d("2024-02-29")
    assert boundary(anchor, MONTHLY, 1) == d("2024-03-29")
    assert boundary(anchor, MONTHLY, 12) == d("2025-02-28")
    assert boundary(anchor, MONTHLY, 13) == d("2025-03-29")


def test_quarterly_anchor_on_august_31() -> None:
    anchor = d("2023-08-31")
    assert [boundary(anchor, QUARTERLY, k) for k in range(6)] == [
        d("2023-08-31"),
        d("2023-11-30"),
        d("2024-02-29"),
        d("2024-05-31"),
        d("2024-08-31"),
        d("2024-11-30"),
    ]
    assert boundary(anchor, QUARTERLY, 6) == d("2025-02-28")


def test_annual_anchor_on_leap_day_falls_back_to_february_28_in_common_years() -> None:
    anchor = d("2024-02-29")
    assert boundary(anchor, ANNUAL, 1) == d("2025-02-28")
    assert boundary(anchor, ANNUAL, 3) == d("2027-02-28")
    assert boundary(anchor, ANNUAL, 4) == d("2028-02-29")
    assert boundary(anchor, ANNUAL, -1) == d("2023-02-28")
    assert boundary(anchor, ANNUAL, -4) == d("2020-02-29")


def test_negative_k_counts_back_from_the_anchor() -> None:
    anchor = d("2024-03-31")
    assert boundary(anchor, MONTHLY, 0) == anchor
    assert boundary(anchor, MONTHLY, -1) == d("2024-02-29")
    assert boundary(anchor, MONTHLY, -2) == d("2024-01-31")
    assert boundary(anchor, MONTHLY, -4) == d("2023-11-30")
    assert boundary(anchor, QUARTERLY, -1) == d("2023-12-31")
    assert boundary(anchor, QUARTERLY, -5) == d("2022-12-31")


def test_a_boundary_outside_the_calendar_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"outside years 1\.\.9999"):
        boundary(d("9999-06-30"), ANNUAL, 1)


# --- the period holding a day -------------------------------------------------------------


def test_period_containing_a_boundary_starts_there() -> None:
    anchor = d("2026-10-01")
    assert period_containing(anchor, MONTHLY, d("2026-10-01")) == period("2026-10-01", "2026-11-01")
    assert period_containing(anchor, MONTHLY, d("2026-10-31")) == period("2026-10-01", "2026-11-01")
    assert period_containing(anchor, MONTHLY, d("2026-11-01")) == period("2026-11-01", "2026-12-01")


def test_period_containing_a_day_earlier_in_the_month_than_the_anchor_day() -> None:
    anchor = d("2023-01-31")
    assert period_containing(anchor, MONTHLY, d("2023-02-27")) == period("2023-01-31", "2023-02-28")
    assert period_containing(anchor, MONTHLY, d("2023-02-28")) == period("2023-02-28", "2023-03-31")
    assert period_containing(anchor, MONTHLY, d("2023-03-30")) == period("2023-02-28", "2023-03-31")


def test_period_containing_a_day_before_the_anchor() -> None:
    anchor = d("2023-01-31")
    assert period_containing(anchor, MONTHLY, d("2023-01-30")) == period("2022-12-31", "2023-01-31")
    assert period_containing(anchor, MONTHLY, d("2022-12-01")) == period("2022-11-30", "2022-12-31")
    assert period_containing(d("2024-08-15"), ANNUAL, d("2020-01-01")) == period(
        "2019-08-15", "2020-08-15"
    )


def test_period_containing_a_day_far_from_the_anchor_is_computed_not_walked() -> None:
    assert period_containing(d("2000-01-15"), MONTHLY, d("9000-06-20")) == period(
        "9000-06-15", "9000-07-15"
    )


def test_quarterly_period_containing() -> None:
    anchor = d("2023-08-31")
    assert period_containing(anchor, QUARTERLY, d("2024-01-15")) == period(
        "2023-11-30", "2024-02-29"
    )
    assert period_containing(anchor, QUARTERLY, d("2024-02-29")) == period(
        "2024-02-29", "2024-05-31"
    )


# --- the periods of a contract ------------------------------------------------------------


def test_periods_overlapping_a_contract_are_full_periods_in_order() -> None:
    periods = periods_overlapping(
        d("2026-01-15"), MONTHLY, d("2026-02-01"), d("2026-04-20"), until=d("2030-01-01")
    )
    assert list(periods) == [
        period("2026-01-15", "2026-02-15"),
        period("2026-02-15", "2026-03-15"),
        period("2026-03-15", "2026-04-15"),
        period("2026-04-15", "2026-05-15"),
    ]


def test_a_contract_ending_on_a_boundary_has_no_period_after_it() -> None:
    periods = periods_overlapping(
        d("2026-01-01"), MONTHLY, d("2026-01-01"), d("2026-03-01"), until=d("2030-01-01")
    )
    assert list(periods) == [period("2026-01-01", "2026-02-01"), period("2026-02-01", "2026-03-01")]


def test_an_open_ended_contract_stops_at_until_inclusive() -> None:
    periods = periods_overlapping(
        d("2026-10-01"), MONTHLY, d("2026-10-01"), None, until=d("2026-12-01")
    )
    assert list(periods) == [
        period("2026-10-01", "2026-11-01"),
        period("2026-11-01", "2026-12-01"),
        period("2026-12-01", "2027-01-01"),
    ]


def test_until_cuts_off_by_period_start_not_by_contract_start() -> None:
    anchor = d("2026-10-01")
    assert list(periods_overlapping(anchor, MONTHLY, d("2026-10-10"), None, d("2026-10-05"))) == [
        period("2026-10-01", "2026-11-01")
    ]
    assert list(periods_overlapping(anchor, MONTHLY, d("2026-10-10"), None, d("2026-09-30"))) == []


def test_a_contract_that_ends_before_it_starts_has_no_periods() -> None:
    anchor = d("2026-10-01")
    day = d("2026-10-10")
    assert list(periods_overlapping(anchor, MONTHLY, day, day, until=anchor)) == []


def test_a_contract_starting_before_its_anchor_has_a_stub_period() -> None:
    periods = periods_overlapping(
        d("2026-11-01"), QUARTERLY, d("2026-10-10"), None, until=d("2026-11-01")
    )
    assert list(periods) == [period("2026-08-01", "2026-11-01"), period("2026-11-01", "2027-02-01")]


# --- proration ----------------------------------------------------------------------------


def test_proration_counts_calendar_days_of_a_28_day_february() -> None:
    february = period("2023-02-01", "2023-03-01")
    assert prorate(Decimal("1000.00"), period("2023-02-15", "2023-03-01"), february) == Decimal(
        "500"
    )


def test_proration_in_a_30_day_month_is_unrounded_until_money_rounds_it() -> None:
    april = period("2026-04-01", "2026-05-01")
    amount = prorate(Decimal("1000.00"), period("2026-04-21", "2026-05-01"), april)
    assert amount == Decimal(1000) / 3
    assert round_money(amount, "EUR") == Decimal("333.33")


def test_proration_in_a_31_day_month() -> None:
    january = period("2026-01-01", "2026-02-01")
    amount = prorate(Decimal("310.00"), period("2026-01-01", "2026-01-11"), january)
    assert amount == Decimal("100")
    assert prorate(Decimal("310.00"), january, january) == Decimal("310.00")


def test_proration_of_a_month_end_anchored_period_uses_its_own_length() -> None:
    # Jan 31 .. Feb 28 2023 is a 28-day period; Feb 28 .. Mar 31 is a 31-day one.
    full = period_containing(d("2023-01-31"), MONTHLY, d("2023-02-10"))
    assert full.days == 28
    assert prorate(Decimal("280"), period("2023-02-10", "2023-02-28"), full) == Decimal("180")


def test_proration_outside_the_full_period_is_an_error() -> None:
    with pytest.raises(ValueError, match="must lie within the full period"):
        prorate(
            Decimal("100"), period("2026-04-20", "2026-05-02"), period("2026-04-01", "2026-05-01")
        )


# --- local days ---------------------------------------------------------------------------


def test_local_midnight_in_utc() -> None:
    assert local_midnight(d("2026-10-01"), "UTC") == utc("2026-10-01T00:00:00")


def test_local_midnight_is_utc_aware() -> None:
    assert local_midnight(d("2026-10-01"), "Europe/Berlin").tzinfo is UTC


def test_local_midnight_on_both_sides_of_a_dst_change_at_2am() -> None:
    assert local_midnight(d("2024-03-31"), "Europe/Berlin") == utc("2024-03-30T23:00:00")
    assert local_midnight(d("2024-04-01"), "Europe/Berlin") == utc("2024-03-31T22:00:00")
    assert local_midnight(d("2024-11-03"), "America/New_York") == utc("2024-11-03T04:00:00")
    assert local_midnight(d("2024-11-04"), "America/New_York") == utc("2024-11-04T05:00:00")


def test_where_midnight_is_skipped_the_day_starts_at_1am() -> None:
    # Santiago springs forward from 00:00 -04 to 01:00 -03; Havana from 00:00 -05 to 01:00 -04.
    assert local_midnight(d("2022-09-11"), "America/Santiago") == utc("2022-09-11T04:00:00")
    assert local_midnight(d("2023-03-12"), "America/Havana") == utc("2023-03-12T05:00:00")


def test_where_midnight_happens_twice_the_day_starts_at_the_first() -> None:
    # Havana falls back from 01:00 -04 to 00:00 -05: midnight is 04:00Z and again 05:00Z.
    assert local_midnight(d("2023-11-05"), "America/Havana") == utc("2023-11-05T04:00:00")


def test_where_clocks_fall_back_over_midnight_the_day_before_lasts_25_hours() -> None:
    # Santiago falls back from 00:00 -03 to 23:00 -04 the day before.
    first = local_midnight(d("2023-04-01"), "America/Santiago")
    second = local_midnight(d("2023-04-02"), "America/Santiago")
    assert second == utc("2023-04-02T04:00:00")
    assert second - first == timedelta(hours=25)


def test_a_skipped_day_starts_and_ends_at_the_same_instant() -> None:
    # Kiritimati moved from -10 to +14 and skipped 31 December 1994; Apia skipped 30 Dec 2011.
    skipped = local_midnight(d("1994-12-31"), "Pacific/Kiritimati")
    assert skipped == local_midnight(d("1995-01-01"), "Pacific/Kiritimati")
    assert skipped == utc("1994-12-31T10:00:00")
    assert local_midnight(d("2011-12-30"), "Pacific/Apia") == local_midnight(
        d("2011-12-31"), "Pacific/Apia"
    )


@pytest.mark.parametrize(
    ("zone", "day", "instant"),
    [
        ("Asia/Kathmandu", "2026-01-01", "2025-12-31T18:15:00"),
        ("Pacific/Chatham", "2026-01-01", "2025-12-31T10:15:00"),  # +13:45 in summer
        ("Pacific/Chatham", "2026-07-01", "2026-06-30T11:15:00"),  # +12:45 in winter
        ("Pacific/Kiritimati", "2026-01-01", "2025-12-31T10:00:00"),  # +14
        ("Pacific/Pago_Pago", "2026-01-01", "2026-01-01T11:00:00"),  # -11
    ],
)
def test_local_midnight_in_zones_with_odd_offsets(zone: str, day: str, instant: str) -> None:
    assert local_midnight(d(day), zone) == utc(instant)


def test_local_date_of_an_instant() -> None:
    instant = utc("2026-10-31T12:00:00")
    assert local_date(instant, "UTC") == d("2026-10-31")
    assert local_date(instant, "Pacific/Kiritimati") == d("2026-11-01")
    assert local_date(instant, "Pacific/Pago_Pago") == d("2026-10-31")
    assert local_date(utc("2026-10-31T23:00:00"), "Asia/Kathmandu") == d("2026-11-01")
    assert local_date(utc("2026-10-31T18:14:59"), "Asia/Kathmandu") == d("2026-10-31")


def test_local_date_accepts_any_offset_not_only_utc() -> None:
    instant = datetime(2026, 11, 3, 10, 0, tzinfo=timezone(timedelta(hours=-8)))
    assert local_date(instant, "Asia/Tokyo") == d("2026-11-04")


def test_local_date_of_a_naive_datetime_is_an_error() -> None:
    with pytest.raises(ValueError, match="no offset"):
        local_date(datetime(2026, 10, 1), "UTC")


def test_an_unknown_timezone_is_named() -> None:
    with pytest.raises(UnknownTimezone, match="'Mars/Olympus_Mons'"):
        local_midnight(d("2026-10-01"), "Mars/Olympus_Mons")
    assert not is_known_timezone("Mars/Olympus_Mons")
    assert not is_known_timezone("../etc/passwd")
    assert not is_known_timezone("")
    assert is_known_timezone("America/Santiago")
