"""A watermark source the operator retires bounds its metric no more: the metric is complete
as far as its slowest *active* source says, and with none left it stays where it was."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, date, datetime, timedelta

import pytest
from eventsourcing.domain import Snapshot
from hypothesis import given
from hypothesis import strategies as st

from domain.application import BillingApplication
from domain.billing import BillingContext, Held, bill_contract
from domain.inbox import (
    RetirementRejected,
    UsageWatermarks,
    context_sources,
    reactivation_note,
    retired_record,
    sources_record,
)
from infra.store.url import store_env
from tests.unit.billing_fixtures import FakeUsage, contract, subscription, usage

OCT_28 = datetime(2026, 10, 28, tzinfo=UTC)
NOV_2 = datetime(2026, 11, 2, tzinfo=UTC)
AT = datetime(2026, 11, 3, 9, tzinfo=UTC)


def two_sources() -> UsageWatermarks:
    marks = UsageWatermarks()
    marks.declare("api_calls", "metering", NOV_2)
    marks.declare("api_calls", "qa", OCT_28)  # a test producer: it holds the metric back
    return marks


def test_retiring_the_slowest_source_completes_the_metric_as_far_as_the_others_say() -> None:
    marks = two_sources()
    done = marks.retire("api_calls", "qa", "test producer, sent by mistake", "ann", AT)
    assert done.recorded and (done.was, done.now) == (OCT_28, NOV_2)
    assert done.active == {"metering": NOV_2}
    assert marks.by_metric() == {"api_calls": NOV_2}
    # Kept for the record: its mark, who retired it, when and why.
    assert done.retired.to_json() == {
        "metric": "api_calls", "source": "qa", "complete_through": OCT_28.isoformat(),
        "reason": "test producer, sent by mistake", "by": "ann", "at": AT.isoformat()}


def test_retiring_the_last_active_source_leaves_the_metric_where_it_was() -> None:
    marks = two_sources()
    marks.retire("api_calls", "qa", "test producer", "ann", AT)
    done = marks.retire("api_calls", "metering", "decommissioned", "ann", AT)
    assert done.active == {} and done.now == done.was == NOV_2
    assert marks.by_metric() == {"api_calls": NOV_2}  # never "complete at period end"


def test_a_retired_source_that_sends_a_watermark_is_active_again() -> None:
    marks = two_sources()
    marks.retire("api_calls", "qa", "test producer", "ann", AT)
    retired = marks.retirement("api_calls", "qa")
    assert retired is not None
    # Even one older than its mark: a source still sending may still send usage.
    assert marks.declare("api_calls", "qa", OCT_28 - timedelta(days=1))
    assert marks.retirement("api_calls", "qa") is None
    assert marks.by_metric() == {"api_calls": OCT_28}  # a mark never moves back
    assert reactivation_note("usage.watermark wm-9", retired, NOV_2, OCT_28) == (
        "usage.watermark wm-9: source `qa` of api_calls, retired on 2026-11-03T09:00:00+00:00 "
        "by ann (test producer), sent a watermark, so it is active again and bounds api_calls: "
        "api_calls is now complete before 2026-10-28T00:00:00+00:00 (was before "
        "2026-11-02T00:00:00+00:00); if that producer is decommissioned, stop it, then retire "
        "the source again: `billcycle watermarks retire --metric api_calls --source qa "
        "--reason ...`")


def test_retiring_an_unknown_metric_or_source_or_without_a_reason_is_refused() -> None:
    marks = two_sources()
    with pytest.raises(RetirementRejected, match=r"no watermark of metric gpu has been "
                       r"received \(metrics with watermarks: api_calls\)"):
        marks.retire("gpu", "qa", "gone", "ann", AT)
    with pytest.raises(RetirementRejected, match=r"api_calls has no watermark source \(unnamed\) "
                       r"\(its sources: `metering`, `qa`\)"):
        marks.retire("api_calls", "", "gone", "ann", AT)
    with pytest.raises(RetirementRejected, match="give the reason the source is retired"):
        marks.retire("api_calls", "qa", "  ", "ann", AT)
    assert marks.by_metric() == {"api_calls": OCT_28}


def test_retiring_a_source_twice_records_nothing_more() -> None:
    marks = two_sources()
    marks.retire("api_calls", "qa", "test producer", "ann", AT)
    again = marks.retire("api_calls", "qa", "", "bob", AT + timedelta(hours=1))
    assert not again.recorded and again.retired.by == "ann"  # the retirement in force
    assert len(marks.collect_events()) == 4  # opened, two marks, one retirement


def test_a_snapshot_taken_before_sources_could_be_retired_is_read() -> None:
    state = dict(Snapshot.take(two_sources()).state)
    del state["retired"], state["class_version"]  # as version 1 took it
    old = Snapshot(originator_id=UsageWatermarks.create_id(), originator_version=3,
                   timestamp=AT, topic=Snapshot.take(two_sources()).topic, state=state)
    marks = old.mutate(None)
    assert isinstance(marks, UsageWatermarks)
    marks.retire("api_calls", "qa", "test producer", "ann", AT)
    assert marks.by_metric() == {"api_calls": NOV_2}


def test_a_snapshot_keeps_the_order_sources_were_retired_in() -> None:
    marks = UsageWatermarks()
    marks.declare("api_calls", "a", OCT_28)
    marks.declare("api_calls", "b", NOV_2)
    marks.retire("api_calls", "b", "decommissioned", "ann", AT)
    marks.retire("api_calls", "a", "decommissioned", "ann", AT)  # the last: where it stays
    with closing(BillingApplication(env=store_env("sqlite:///:memory:"))) as app:
        stored = app.mapper.to_stored_event(Snapshot.take(marks))
        snapshot = app.mapper.to_domain_event(stored)
    assert isinstance(snapshot, Snapshot)
    again = snapshot.mutate(None)
    assert isinstance(again, UsageWatermarks)
    assert again.by_metric() == marks.by_metric() == {"api_calls": OCT_28}


def held_reason(marks: UsageWatermarks, begun_before_retirement: bool = False) -> str:
    manifest = {"watermark_sources": sources_record(marks),
                "retired_watermark_sources": retired_record(marks)}
    if begun_before_retirement:
        del manifest["retired_watermark_sources"]
    sources, retired = context_sources(manifest)
    ctx = BillingContext(date(2026, 11, 1), marks.by_metric(), 0, watermark_sources=sources,
                         retired_sources=retired)
    outcome = bill_contract(contract(subscription("100.00"), usage()), ctx, FakeUsage())
    assert isinstance(outcome, Held)
    return outcome.reason


def test_a_hold_another_source_has_reached_the_period_end_of_says_how_to_retire() -> None:
    reason = held_reason(two_sources())
    assert reason.endswith(
        "the invoice is held until the producer sends usage.watermark complete_through >= "
        "2026-11-01T00:00:00+00:00 with source `qa` (or, if source `qa` will send no more, "
        "retire it: `billcycle watermarks retire --metric api_calls --source qa --reason ...`), "
        "then run `billcycle retry` for this batch")
    # Batches begun before sources could be retired: `batch verify` bills them again so.
    assert "retire" not in held_reason(two_sources(), begun_before_retirement=True)


def test_a_hold_no_other_source_would_release_does_not_suggest_retiring() -> None:
    marks = UsageWatermarks()
    marks.declare("api_calls", "metering", OCT_28)
    marks.declare("api_calls", "qa", OCT_28 + timedelta(days=1))
    marks.declare("api_calls", "old", OCT_28)
    marks.retire("api_calls", "old", "decommissioned", "ann", AT)
    reason = held_reason(marks)
    assert "(the slowest of its 2 sources; `qa` is at" in reason  # the retired one not named
    assert "billcycle watermarks retire" not in reason


def test_a_hold_of_a_metric_whose_sources_are_all_retired_says_so() -> None:
    marks = UsageWatermarks()
    marks.declare("api_calls", "metering", OCT_28)
    marks.retire("api_calls", "metering", "decommissioned", "ann", AT)
    assert held_reason(marks) == (
        "api: usage of metric api_calls is incomplete: its watermark 2026-10-28T00:00:00+00:00 "
        "(its one source is retired: it stays where the last one retired left it) is before "
        "the period end 2026-11-01T00:00:00+00:00; the invoice is held until the producer "
        "sends usage.watermark complete_through >= 2026-11-01T00:00:00+00:00 (from any source; "
        "a retired one that sends it is active again), then run `billcycle retry` for this "
        "batch")


SOURCES = st.sampled_from(["", "a", "b", "c"])
STEPS = st.lists(st.one_of(
    st.tuples(st.just("mark"), SOURCES, st.integers(0, 30)),
    st.tuples(st.just("retire"), SOURCES, st.just(0))), max_size=30)


@given(STEPS)
def test_a_metric_is_complete_as_far_as_its_slowest_active_source_says(
        steps: list[tuple[str, str, int]]) -> None:
    marks = UsageWatermarks()
    expected: dict[str, datetime] = {}  # each source's mark
    retired: list[str] = []  # in the order retired
    before = None
    for step, source, day in steps:
        if step == "mark":
            marks.declare("m", source, OCT_28 + timedelta(days=day))
            through = OCT_28 + timedelta(days=day)
            expected[source] = max(expected.get(source, through), through)
            if source in retired:
                retired.remove(source)
        elif source in expected:
            marks.retire("m", source, "gone", "ann", AT)
            if source not in retired:
                retired.append(source)
        active = {s: t for s, t in expected.items() if s not in retired}
        if not expected:
            assert marks.by_metric() == {}
            continue
        now = marks.by_metric()["m"]
        assert now == (min(active.values()) if active else expected[retired[-1]])
        if step == "retire" and before is not None:
            assert now >= before  # retiring never puts a metric back
        before = now
