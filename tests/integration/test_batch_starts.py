"""Every run lists the batches of its cycle date as it starts: the store reads the batches'
starts through an index of their own, so that the list costs the same in a log of millions of
events as in a new one; a store made before the index has it made at its first open."""

from __future__ import annotations

from datetime import UTC, date, datetime

from domain.application import BillingApplication
from domain.billing_run import BillingRun
from infra.store.url import store_env
from tests.integration.indexed_topics import (
    fill_the_log,
    index_name,
    indexed,
    read_through_its_index,
)
from tests.integration.test_counted_properties import counting, ingest
from tests.store_sql import on_store

NOVEMBER, DECEMBER = date(2026, 11, 1), date(2026, 12, 1)


def start(app: BillingApplication, batch_id: str, cycle_date: date) -> BillingRun:
    run = BillingRun(batch_id=batch_id, cycle_date=cycle_date,
                     started_at=datetime(2026, 11, 29, tzinfo=UTC), manifest={})
    app.save(run)
    return run


def start_some(app: BillingApplication) -> None:
    """Batches of two cycle dates, started out of their ids' order, other events between."""
    start(app, "B-dec-z", DECEMBER)
    ingest(app, counting("seats", "m-1"))
    start(app, "B-nov", NOVEMBER)
    finished = start(app, "B-dec-a", DECEMBER)
    finished.finish(datetime(2026, 11, 30, tzinfo=UTC), {"contracts": 0})
    app.save(finished)
    ingest(app, counting("seats", "m-2"))


def listed(app: BillingApplication, cycle_date: date) -> list[tuple[str, bool]]:
    return [(run.batch_id, run.finished_at is not None) for run in app.batches(cycle_date)]


def test_a_cycle_dates_batches_are_listed_in_the_order_they_started(
        app: BillingApplication) -> None:
    start_some(app)

    assert listed(app, DECEMBER) == [("B-dec-z", False), ("B-dec-a", True)]
    assert listed(app, NOVEMBER) == [("B-nov", False)]
    assert listed(app, date(2027, 1, 1)) == []


def test_a_store_made_before_the_index_has_it_made_at_its_first_open(
        kind: str, url: str) -> None:
    # As an earlier billcycle left it: its batches started in a log without the index.
    earlier = BillingApplication(env=store_env(url))
    on_store(url, f"DROP INDEX {index_name(kind, 'batch_started')}")
    start_some(earlier)
    before = listed(earlier, DECEMBER), listed(earlier, NOVEMBER)
    earlier.close()
    assert not indexed(kind, url, "batch_started")

    upgraded = BillingApplication(env=store_env(url))
    try:
        assert indexed(kind, url, "batch_started")
        assert (listed(upgraded, DECEMBER), listed(upgraded, NOVEMBER)) == before
        assert before == ([("B-dec-z", False), ("B-dec-a", True)], [("B-nov", False)])
    finally:
        upgraded.close()


def test_the_starts_are_read_through_their_index_in_a_large_log(
        kind: str, url: str, app: BillingApplication) -> None:
    start(app, "B-1", DECEMBER)
    fill_the_log(kind, url, 200_000)
    start(app, "B-2", DECEMBER)

    read_through_its_index(kind, url, app, "batch_started")
    assert [run.batch_id for run in app.batches(DECEMBER)] == ["B-1", "B-2"]
