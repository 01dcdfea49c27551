"""unique_count counts string, integer and boolean values; a decimal, null, array or object
counts nobody, and billing says so (QA's F3: they were counted as nobody without a word)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from domain.billing import InvoiceDue, NothingDue
from domain.terms import PerUnit
from domain.usage import MAX_COUNTED_VALUE_BYTES, UNCOUNTED_MARK, counted_value, property_values
from tests.unit.billing_fixtures import FakeUsage, at, bill, contract, run, usage

USERS = usage("active_users", PerUnit(Decimal(2)), "users", aggregation="unique_count",
              unique_property="user")


def test_values_are_kept_as_their_text_or_as_a_mark_of_their_kind_and_message() -> None:
    kept = dict(property_values(
        {"s": "7", "i": 7, "b": True, "d": 1.5, "n": None, "a": [1], "o": {"k": 1}}, "u-1"))
    assert (kept["s"], kept["i"], kept["b"]) == ("7", "7", "true")  # as JSON writes them
    assert kept["d"] == UNCOUNTED_MARK + "decimal:u-1"
    assert kept["n"] == UNCOUNTED_MARK + "null:u-1"
    assert kept["a"] == UNCOUNTED_MARK + "array:u-1"
    assert kept["o"] == UNCOUNTED_MARK + "object:u-1"
    # A long message id is marked by its digest: the mark fits the store's key.
    [(_, mark)] = property_values({"d": 2.5}, "x" * 500)
    assert mark.startswith(UNCOUNTED_MARK + "decimal:sha256:")
    assert len(mark.encode()) <= MAX_COUNTED_VALUE_BYTES
    # A string sent looking like a mark is kept as a digest: no counted value is a mark.
    assert not counted_value(UNCOUNTED_MARK + "decimal:u-1").startswith(UNCOUNTED_MARK)


def test_values_unique_count_does_not_count_are_said_with_the_period_billed() -> None:
    # QA (F3): 1.5, 2.5, null and a message without `user` were accepted and the line said
    # "0 users" without a word. An array and an object count nobody either.
    c = contract(USERS)
    meter = FakeUsage()
    october = at(date(2026, 10, 5))
    meter.add(october, "1", user="alice")  # e-1
    for value in (1.5, 2.5, None, ["bob"], {"id": "carol"}):  # e-2 to e-6
        meter.add(october, "1", user=value)
    meter.add(october, "1")  # e-7: no user, no value: counts nobody, not a value uncounted
    due = bill(c, date(2026, 11, 1), meter)
    [line] = due.lines
    assert (line.quantity, line.amount) == (Decimal(1), Decimal("2.00"))  # alice
    assert line.basis["events"] == 7
    assert line.basis["uncounted_events"] == 5
    assert line.basis["uncounted_example"] == "e-5 (an array)"
    assert due.uncounted_usage == (
        "usage of cus_1 whose counted property holds a value unique_count does not count (a "
        "decimal, null, array or object) counts nobody: users (active_users) 2026-10-01 to "
        "2026-11-01: 5 events whose user is not counted, e.g. e-5 (an array); unique_count "
        "counts string, integer and boolean values: fix the producer; an event sent again "
        "under a new id with the value as a string is counted by the next run (and is usage "
        "of its metric for every other component too)")


def test_a_period_without_such_values_has_no_note() -> None:
    c = contract(USERS)
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "1", user=7)
    meter.add(at(date(2026, 10, 6)), "1", user="7")  # the same value as 7
    due = bill(c, date(2026, 11, 1), meter)
    assert due.lines[0].quantity == Decimal(1)
    assert "uncounted_events" not in due.lines[0].basis
    assert due.uncounted_usage is None


def test_such_a_value_arriving_after_its_period_was_invoiced_is_said_too() -> None:
    # It changes nothing billed, so no late_usage line; the run says it all the same.
    c = contract(USERS)
    meter = FakeUsage()
    meter.add(at(date(2026, 10, 5)), "1", user="alice")
    bill(c, date(2026, 11, 1), meter)
    meter.add(at(date(2026, 10, 20)), "1", user=3.25)  # e-2
    outcome = run(c, date(2026, 11, 2), meter)
    assert isinstance(outcome, NothingDue)
    assert outcome.uncounted_usage is not None
    assert "users (active_users) 2026-10-01 to 2026-11-01: 1 event whose user is not " \
        "counted, e.g. e-2 (a decimal)" in outcome.uncounted_usage
    # Sent again under a new id as a string, it is counted: late usage.
    meter.add(at(date(2026, 10, 20)), "1", user="3.25")
    late = run(c, date(2026, 11, 3), meter)
    assert isinstance(late, InvoiceDue)
    assert [(ln.kind.value, ln.quantity, ln.amount) for ln in late.lines] == [
        ("late_usage", Decimal(2), Decimal("2.00"))]
