"""Every usage event of a priced metric is billed (or held) or named: the windows a contract bills
(`usage_windows`) are the ones billing prices, and what lies between them is found by
`unbilled_windows`, whatever the frequency, timezone, end and amendments."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import event, given, settings
from hypothesis import strategies as st

from domain.billing import InvoiceDue, usage_windows
from domain.calendar import local_midnight
from domain.contract import Contract
from domain.invoice_lines import LineKind
from domain.terms import PerUnit
from domain.unbilled_usage import MeteredUsage, unbilled_windows
from domain.usage import BUCKET, bucket_start
from tests.unit.billing_fixtures import FakeUsage, contract, run, subscription, usage

API = usage("api_calls", PerUnit(Decimal(1)))
PLATFORM = subscription("10.00")
LAST_DAY = date(2027, 1, 1)  # usage occurs until 2026-12-31 UTC: 2027-01-01 somewhere
CYCLE_DATE = date(2027, 7, 1)  # every period holding usage has ended by then


@st.composite
def contracts(draw: st.DrawFn) -> Contract:
    start = draw(st.dates(date(2026, 1, 1), date(2026, 6, 30)))
    end = draw(st.none() | st.dates(start + timedelta(days=1), date(2027, 1, 31)))
    c = contract(
        *draw(st.sampled_from([(PLATFORM, API), (PLATFORM,)])),
        start=start, end=end,
        frequency=draw(st.sampled_from(["monthly", "quarterly"])),
        timezone=draw(st.sampled_from(["UTC", "Asia/Kathmandu", "America/New_York"])),
    )
    last = (end or date(2027, 1, 31)) - timedelta(days=1)
    for n, day in enumerate(sorted(draw(st.sets(st.dates(start, last), max_size=3)))):
        prices_api = draw(st.booleans())
        c.amend(day, (PLATFORM, API) if prices_api else (PLATFORM,), None, None, f"m-{n}")
    return c


instants = st.datetimes(datetime(2025, 12, 1), datetime(2026, 12, 31, 23, 59)).map(
    lambda t: t.replace(tzinfo=UTC))


def billed_events(c: Contract, meter: FakeUsage) -> Decimal:
    """Every final usage line up to CYCLE_DATE, in one invoice: one unit a event."""
    outcome = run(c, CYCLE_DATE, meter)
    if not isinstance(outcome, InvoiceDue):
        return Decimal(0)
    return sum((line.quantity for line in outcome.lines if line.kind == LineKind.USAGE),
               Decimal(0))


def inside(t: datetime, windows: list[tuple[datetime, datetime]]) -> bool:
    return any(s <= t < e for s, e in windows)


@settings(max_examples=150, deadline=None)
@given(contracts(), st.lists(instants, max_size=12))
def test_billing_prices_exactly_the_usage_in_the_contracts_windows(
    c: Contract, when: list[datetime]
) -> None:
    meter = FakeUsage()
    for t in when:
        meter.add(t, "1")
    windows = usage_windows(c, "api_calls", LAST_DAY)
    assert billed_events(c, meter) == sum(1 for t in when if inside(t, windows))


@settings(max_examples=150, deadline=None)
@given(contracts(), st.lists(instants, min_size=1, max_size=12))
def test_every_event_is_billed_named_in_a_window_or_outside_the_service(
    c: Contract, when: list[datetime]
) -> None:
    if not any(API in v.components for v in c.versions):
        return  # no version prices the metric: `unpriced_usage` names all of it
    buckets = [bucket_start(t) for t in when]
    metered = {"api_calls": MeteredUsage(len(when), min(buckets), max(buckets))}
    found = unbilled_windows([c], metered)
    unbilled = [(w.starts, w.ends) for w in found if w.tag == ""]
    counted_outside = [(w.starts, w.ends) for w in found if w.tag is None]
    billed = usage_windows(c, "api_calls", LAST_DAY)
    starts = local_midnight(c.start_date, c.timezone)
    ends = None if c.end_date is None else local_midnight(c.end_date, c.timezone)
    for t in when:
        outside = t < starts or (ends is not None and t >= ends)
        # Exactly one holds: billed, in a window a run reads and names, or outside the
        # service (named by `usage_outside_service`, and counted in its windows).
        assert [inside(t, billed), inside(t, unbilled), outside].count(True) == 1, t
        assert inside(t, counted_outside) == outside, t
        event("billed" if inside(t, billed) else "named" if inside(t, unbilled) else "outside")
    assert all(e - s >= BUCKET for s, e in unbilled)


@st.composite
def renewals(draw: st.DrawFn) -> tuple[Contract, Contract]:
    """Two contracts of one customer pricing the metric, one after the other, with or without
    a gap, each maybe amended away from it."""
    first_start = draw(st.dates(date(2026, 1, 1), date(2026, 3, 31)))
    first_end = draw(st.dates(first_start + timedelta(days=1), date(2026, 8, 31)))
    second_start = draw(st.dates(first_end, date(2026, 9, 30)))
    pair = []
    for n, (start, end) in enumerate([(first_start, first_end), (second_start, None)], 1):
        c = contract(PLATFORM, API, start=start, end=end, contract_id=f"ct_{n}",
                     timezone=draw(st.sampled_from(["UTC", "Asia/Kathmandu"])))
        last = (end or date(2027, 1, 31)) - timedelta(days=1)
        if draw(st.booleans()) and start < last:
            c.amend(draw(st.dates(start, last)), (PLATFORM,), None, None, f"m-drop-{n}")
        pair.append(c)
    return pair[0], pair[1]


@settings(max_examples=150, deadline=None)
@given(renewals(), st.lists(st.tuples(instants, st.sampled_from(["", "ct_1", "ct_2"])),
                            min_size=1, max_size=12))
def test_every_event_of_two_contracts_is_read_named_or_outside_both_services(
    pair: tuple[Contract, Contract], sent: list[tuple[datetime, str]]
) -> None:
    buckets = [bucket_start(t) for t, _ in sent]
    tagged: dict[str, int] = {}
    for _, tag in sent:
        if tag:
            tagged[tag] = tagged.get(tag, 0) + 1
    metered = {"api_calls": MeteredUsage(len(sent), min(buckets), max(buckets), tagged)}
    found = unbilled_windows(list(pair), metered)
    read = {c.contract_id: usage_windows(c, "api_calls", LAST_DAY) for c in pair}
    read[""] = read["ct_1"] + read["ct_2"]  # untagged: either's (held where both price it)
    # Outside the span of the contracts pricing the metric: `usage_outside_service`'s to name.
    pricing = [c for c in pair if any(API in v.components for v in c.versions)]
    if not pricing:
        return
    span_starts = min(local_midnight(c.start_date, c.timezone) for c in pricing)
    ends = [c.end_date and local_midnight(c.end_date, c.timezone) for c in pricing]
    span_ends = None if None in ends else max(e for e in ends if e is not None)
    for t, tag in sent:
        if tag and tag not in {c.contract_id for c in pricing}:
            continue  # a contract pricing none of it: `misattributed_usage`'s to name
        named = inside(t, [(w.starts, w.ends) for w in found if w.tag == tag])
        outside = t < span_starts or (span_ends is not None and t >= span_ends)
        assert [inside(t, read[tag]), named, outside].count(True) == 1, (t, tag)
        assert inside(t, [(w.starts, w.ends) for w in found if w.tag is None]) == outside
        event("read" if inside(t, read[tag]) else "named" if named else "outside")


@settings(max_examples=150, deadline=None)
@given(contracts(), st.lists(instants, min_size=1, max_size=12), instants)
def test_after_an_acknowledgement_every_later_event_is_still_accounted_for_and_no_earlier_one(
    c: Contract, when: list[datetime], acknowledged: datetime
) -> None:
    """The store reads the meters from the bucket holding the acknowledged instant on
    (domain/acknowledgements.py): what the windows then name starts there."""
    if not any(API in v.components for v in c.versions):
        return
    first_read = bucket_start(acknowledged)
    later = [t for t in when if t >= first_read]
    if not later:
        return  # nothing left to name: no read at all
    buckets = [bucket_start(t) for t in later]
    found = unbilled_windows([c], {"api_calls": MeteredUsage(len(later), min(buckets),
                                                             max(buckets))})
    assert all(w.starts >= first_read for w in found)
    unbilled = [(w.starts, w.ends) for w in found if w.tag == ""]
    counted_outside = [(w.starts, w.ends) for w in found if w.tag is None]
    billed = usage_windows(c, "api_calls", LAST_DAY)
    for t in later:
        assert [inside(t, billed), inside(t, unbilled), inside(t, counted_outside)].count(
            True) == 1, t
