"""A metric is complete only as far as its slowest source says: what the hold reason and the
ingest note tell the operator of the sources (QA14 M1)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from domain.billing import BillingContext, Held, bill_contract
from domain.inbox import UsageWatermarks, watermark_note
from tests.unit.billing_fixtures import FakeUsage, contract, subscription, usage

OCT_28 = datetime(2026, 10, 28, tzinfo=UTC)
NOV_2 = datetime(2026, 11, 2, tzinfo=UTC)
NAMED = "usage.watermark wm-1"


def held_reason(sources: dict[str, datetime] | None) -> str:
    c = contract(subscription("100.00"), usage())
    marks = {"api_calls": min(sources.values()) if sources else OCT_28}
    ctx = BillingContext(date(2026, 11, 1), marks, 0,
                         watermark_sources={"api_calls": sources} if sources else {})
    outcome = bill_contract(c, ctx, FakeUsage())
    assert isinstance(outcome, Held)
    return outcome.reason


def test_a_hold_names_the_source_behind_and_the_others_marks() -> None:
    assert held_reason({"metering": OCT_28, "": NOV_2}) == (
        "api: usage of metric api_calls is incomplete: its watermark 2026-10-28T00:00:00+00:00 "
        "from source `metering` (the slowest of its 2 sources; (unnamed) is at "
        "2026-11-02T00:00:00+00:00) is before the period end 2026-11-01T00:00:00+00:00; the "
        "invoice is held until the producer sends usage.watermark complete_through >= "
        "2026-11-01T00:00:00+00:00 with source `metering`, then run `billcycle retry` for "
        "this batch")


def test_a_hold_asks_for_a_watermark_from_every_source_behind() -> None:
    reason = held_reason({"b": datetime(2026, 10, 30, tzinfo=UTC), "": OCT_28, "c": NOV_2})
    assert "from source (unnamed) (the slowest of its 3 sources; `b` is at 2026-10-30" in reason
    assert ">= 2026-11-01T00:00:00+00:00 with no source, and one with source `b`, then" in reason


def test_a_batch_that_recorded_no_sources_is_held_with_the_reason_it_gave() -> None:
    # Batches begun before runs recorded the sources: `batch verify` bills them again so.
    assert held_reason(None) == (
        "api: usage of metric api_calls is incomplete: its watermark 2026-10-28T00:00:00+00:00 "
        "is before the period end 2026-11-01T00:00:00+00:00; the invoice is held until the "
        "producer sends usage.watermark complete_through >= 2026-11-01T00:00:00+00:00, then "
        "run `billcycle retry` for this batch")


def declared(marks: UsageWatermarks, source: str, through: datetime) -> str | None:
    was = marks.by_metric().get("api_calls")
    if not marks.declare("api_calls", source, through):
        return None
    return watermark_note(NAMED, "api_calls", source, through, was, marks.marks["api_calls"])


def test_a_watermark_another_source_keeps_from_taking_effect_is_noted() -> None:
    marks = UsageWatermarks()
    assert declared(marks, "metering", OCT_28) is None  # the first: it takes effect
    assert declared(marks, "", NOV_2) == (
        "usage.watermark wm-1: api_calls stays complete only before 2026-10-28T00:00:00+00:00, "
        "the watermark of source `metering`, not through 2026-11-02T00:00:00+00:00 as declared "
        "with no source: a metric is complete only as far as the slowest of its sources says "
        "(api_calls has 2; docs/accounting.md, Usage completeness); if this message speaks for "
        "source `metering`, send it again with source `metering` and a new id")
    assert marks.by_metric() == {"api_calls": OCT_28}
    assert declared(marks, "", NOV_2) is None  # again: nothing new of its source
    assert declared(marks, "metering", NOV_2) is None  # the slowest catches up: it moves


def test_the_first_watermark_of_a_source_behind_the_others_is_noted() -> None:
    marks = UsageWatermarks()
    declared(marks, "metering", NOV_2)
    note = declared(marks, "qa", OCT_28)
    assert note is not None and note.startswith(
        "usage.watermark wm-1: the first watermark of api_calls from source `qa`, through "
        "2026-10-28T00:00:00+00:00, puts api_calls back from complete before "
        "2026-11-02T00:00:00+00:00 to before 2026-10-28T00:00:00+00:00")
