"""Service periods: anchored boundaries, proration by calendar day, and local days in a zone.

Pure date arithmetic: no clock, no I/O. A period is half-open `[start, end)` of local dates in
the contract's timezone; `local_midnight` turns a local date into the instant it starts.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.terms import BillingFrequency


@dataclass(frozen=True, order=True)
class ServicePeriod:
    """The local dates `[start, end)`: `end` is the first day no longer served."""

    start: date
    end: date

    def __post_init__(self) -> None:
        # An empty period has nothing to bill or prorate; `overlap` returns None instead.
        if self.end <= self.start:
            raise ValueError(
                f"service period {self.start}..{self.end} is empty; end must be after start"
            )

    @property
    def days(self) -> int:
        """Number of calendar days served."""
        return (self.end - self.start).days

    def contains(self, day: date) -> bool:
        """Whether `day` is served: on or after start, before end."""
        return self.start <= day < self.end

    def overlap(self, other: ServicePeriod) -> ServicePeriod | None:
        """The days both periods serve, or None when they share no day."""
        start, end = max(self.start, other.start), min(self.end, other.end)
        return ServicePeriod(start, end) if start < end else None


def _month_index(day: date) -> int:
    """Months since year 0, so month arithmetic is plain integer arithmetic."""
    return day.year * 12 + day.month - 1


# The calendar functions below are pure and take hashable arguments; a book has few distinct
# anchors, frequencies, zones and period boundaries, so a billing run asks the same questions
# over and over (they were 9% of a run). The caches are bounded: a long-lived process stays small.
_CACHE_SIZE = 1 << 14


@lru_cache(maxsize=_CACHE_SIZE)
def boundary(anchor: date, frequency: BillingFrequency, k: int) -> date:
    """The k-th period boundary: anchor + k periods, on the anchor's day or the month's last."""
    year, month0 = divmod(_month_index(anchor) + k * frequency.months, 12)
    if not 1 <= year <= 9999:
        raise ValueError(
            f"period boundary {k} from anchor {anchor} ({frequency.value}) is outside years 1..9999"
        )
    month = month0 + 1
    # Clamp from the anchor every time, never from the previous boundary, so Jan 31 gives
    # Feb 28 and then Mar 31 again rather than Mar 28.
    return date(year, month, min(anchor.day, calendar.monthrange(year, month)[1]))


def _period(anchor: date, frequency: BillingFrequency, k: int) -> ServicePeriod:
    return ServicePeriod(boundary(anchor, frequency, k), boundary(anchor, frequency, k + 1))


def _index_containing(anchor: date, frequency: BillingFrequency, day: date) -> int:
    # Boundary k falls in month anchor + k x months, so floor division by the frequency finds
    # the period by month; a day earlier in that month than the boundary belongs to the one
    # before. Boundary k + 1 always lies in a later month than `day`, so one step back suffices.
    k = (_month_index(day) - _month_index(anchor)) // frequency.months
    return k - 1 if boundary(anchor, frequency, k) > day else k


@lru_cache(maxsize=_CACHE_SIZE)
def period_containing(anchor: date, frequency: BillingFrequency, day: date) -> ServicePeriod:
    """The full period holding `day`, before or after the anchor."""
    return _period(anchor, frequency, _index_containing(anchor, frequency, day))


def periods_overlapping(
    anchor: date, frequency: BillingFrequency, start: date, end: date | None, until: date
) -> Iterator[ServicePeriod]:
    """Full periods sharing a day with `[start, end)`, in order, none starting after `until`.

    `end` None is an open-ended contract; `until` (inclusive) is what stops iteration then.
    """
    return iter(_periods_overlapping(anchor, frequency, start, end, until))


@lru_cache(maxsize=_CACHE_SIZE)
def _periods_overlapping(
    anchor: date, frequency: BillingFrequency, start: date, end: date | None, until: date
) -> tuple[ServicePeriod, ...]:
    if end is not None and end <= start:
        return ()
    periods: list[ServicePeriod] = []
    k = _index_containing(anchor, frequency, start)
    while True:
        period = _period(anchor, frequency, k)
        if period.start > until or (end is not None and period.start >= end):
            return tuple(periods)
        periods.append(period)
        k += 1


def prorate(amount: Decimal, used: ServicePeriod, full: ServicePeriod) -> Decimal:
    """amount x used.days / full.days, unrounded; `used` must lie within `full`."""
    if used.start < full.start or used.end > full.end:
        raise ValueError(
            f"cannot prorate {used.start}..{used.end} against {full.start}..{full.end}: "
            "the used days must lie within the full period"
        )
    return amount * used.days / full.days


class UnknownTimezone(ValueError):
    """A timezone name that is not in the IANA database."""


@cache
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UnknownTimezone(
            f"unknown timezone {name!r}; use an IANA name such as UTC or Europe/Berlin"
        ) from None


def is_known_timezone(name: str) -> bool:
    """Whether `name` is an IANA timezone this machine's tz database knows."""
    try:
        _zone(name)
    except UnknownTimezone:
        return False
    return True


def local_date(instant: datetime, timezone: str) -> date:
    """The local date in `timezone` at an aware instant."""
    if instant.tzinfo is None:
        raise ValueError(f"instant {instant} has no offset; pass an aware datetime")
    return instant.astimezone(_zone(timezone)).date()


@lru_cache(maxsize=_CACHE_SIZE)
def local_midnight(day: date, timezone: str) -> datetime:
    """The aware UTC instant at which local `day` starts in `timezone`."""
    zone = _zone(timezone)
    midnight = datetime.combine(day, time())
    # fold=0 reads the wall time with the offset before a transition, fold=1 with the one
    # after; a real midnight survives the round trip, and where it occurs twice (clocks set
    # back over midnight) the day starts at the earlier one.
    readings = [midnight.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    real = [r for r in readings if r.astimezone(zone).replace(tzinfo=None) == midnight]
    if real:
        return min(real)
    # Midnight falls in a gap (clocks set forward over it): the day starts at the transition,
    # which lies between the two readings. tzdata transitions are on whole seconds.
    low, high = min(readings), max(readings)
    while high - low > timedelta(seconds=1):
        middle = (low + (high - low) / 2).replace(microsecond=0)
        if local_date(middle, timezone) >= day:
            high = middle
        else:
            low = middle
    return high


def joined_spans(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Spans of instants, sorted by start, with the overlapping and adjacent ones joined."""
    joined: list[tuple[datetime, datetime]] = []
    for start, end in spans:
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    return joined
