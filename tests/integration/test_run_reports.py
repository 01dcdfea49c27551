"""What a run tells its operator when other runs of the cycle date ran beside it or before it.

Two "processes" are two applications on one store; a race is made by running the second one
from the first one's progress callback, which is called between its chunks.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import cast

import pytest

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from domain.billing_run import BillingRun, Outcome, billing_run_id
from domain.billing_runs import BillingRuns, RunReport
from infra import text
from infra.store.url import store_env
from tests.integration.book import many_contracts

NOV = date(2026, 11, 1)
CONTRACTS = 12
CHUNK = 4


class Killed(Exception):
    """A process stopped between two chunks."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    found = (f"sqlite:///{tmp_path / 'r.db'}" if request.param == "sqlite"
             else cast(str, request.getfixturevalue("fresh_pg_url")))
    app = BillingApplication(env=store_env(found))
    try:
        IngestPipeline(app).process_lines(io.BytesIO(many_contracts(CONTRACTS)), "book")
    finally:
        app.close()
    return found


@pytest.fixture
def apps(url: str) -> Iterator[Callable[[], BillingApplication]]:
    opened: list[BillingApplication] = []

    def process() -> BillingApplication:
        opened.append(BillingApplication(env=store_env(url)))
        return opened[-1]

    yield process
    for app in opened:
        app.close()


def runs(app: BillingApplication) -> BillingRuns:
    return BillingRuns(app, lambda: datetime.now(UTC), chunk_size=CHUNK)


def after_chunks(count: int, then: Callable[[], object]) -> Callable[[int, int], None]:
    """A progress callback that does `then` once, after `count` chunks were settled."""
    calls = 0

    def progress(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == count:
            then()
    return progress


def kill() -> None:
    raise Killed


def test_a_run_beside_another_batch_of_its_cycle_date_says_that_batch_billed_them(
    apps: Callable[[], BillingApplication],
) -> None:
    # QA12 F1: the loser said "invoiced 0, not due 18077" and nothing else.
    other: list[RunReport] = []
    loser = runs(apps()).run(NOV, "nov-a", progress=after_chunks(
        1, lambda: other.append(runs(apps()).run(NOV, "nov-b"))))
    [winner] = other
    assert loser.counts()["invoiced"] == CHUNK
    assert winner.counts()["invoiced"] == CONTRACTS - CHUNK

    document = loser.to_json()
    assert document["counts"] == {"contracts": CONTRACTS, "invoiced": CHUNK, "held": 0,
                                  "failed": 0, "not_due": CONTRACTS - CHUNK}  # contract.md's
    assert document["billed_elsewhere"] == [
        {"batch_id": "nov-b", "contracts": CONTRACTS - CHUNK}]
    [warning] = loser.warnings
    assert f"{CONTRACTS - CHUNK} contract(s) were invoiced by batch nov-b" in warning
    summary = text.run_summary(loser)
    assert f"not due {CONTRACTS - CHUNK} (billed by batch nov-b: {CONTRACTS - CHUNK})" \
        in summary, summary
    # The winner started while the loser ran: it names the loser as unfinished then.
    said = winner.to_json()
    assert said["billed_elsewhere"] == [{"batch_id": "nov-a", "contracts": CHUNK}]
    assert said["unfinished_batches"] == ["nov-a"]
    [warning] = winner.warnings
    assert warning.startswith("batch nov-a of cycle date 2026-11-01 (started ")
    assert f"it invoiced {CHUNK} of the contracts this run found not due" in warning


def test_a_plain_rerun_of_a_finished_cycle_date_says_nothing_of_billed_elsewhere(
    apps: Callable[[], BillingApplication],
) -> None:
    runs(apps()).run(NOV, "nov-a")
    again = runs(apps()).run(NOV, "nov-b")
    assert again.counts()["not_due"] == CONTRACTS
    said = again.to_json()
    assert said["billed_elsewhere"] == [] and said["unfinished_batches"] == []
    assert again.warnings == []


def test_a_run_names_the_unfinished_batches_of_its_cycle_date_and_how_to_resume_them(
    apps: Callable[[], BillingApplication],
) -> None:
    # QA12 F4: the next plain run opened a new batch without a word about the killed ones.
    with pytest.raises(Killed):
        runs(apps()).run(NOV, "killed", progress=after_chunks(1, kill))
    with pytest.raises(Killed):
        runs(apps()).run(date(2026, 10, 1), "oct-killed", progress=after_chunks(1, kill))
    resume = "billcycle run --cycle-date 2026-11-01 --batch-id killed"
    for dry_run in (True, False):
        report = runs(apps()).run(NOV, dry_run=dry_run)
        assert len(report.warnings) == 1, report.warnings
        [warning] = report.warnings
        assert "batch killed of cycle date 2026-11-01" in warning and resume in warning
        assert "oct-killed" not in warning
        assert report.to_json()["unfinished_batches"] == ["killed"]
    # Resuming it finishes it: the next run has nothing to say.
    runs(apps()).run(NOV, "killed")
    assert runs(apps()).run(NOV).warnings == []


def test_two_processes_on_one_batch_id_each_count_only_what_they_did(
    apps: Callable[[], BillingApplication],
) -> None:
    # QA12 F8: the two summaries together claimed more invoices than the batch holds.
    joined: list[RunReport] = []
    app = apps()
    first = runs(app).run(NOV, "Y", progress=after_chunks(
        1, lambda: joined.append(runs(apps()).run(NOV, "Y"))))
    [second] = joined
    batch = app.get_or_none(billing_run_id("Y"), BillingRun)
    assert batch is not None
    assert batch.counts()["invoiced"] == CONTRACTS
    reports = (first, second)
    assert sum(r.counts()["invoiced"] for r in reports) == CONTRACTS
    assert sum(r.counts()["contracts"] for r in reports) == CONTRACTS
    assert sorted(n for r in reports for n in (i.number for i in r.invoices)) == [
        f"INV-{n:06d}" for n in range(1, CONTRACTS + 1)]
    for report in reports:  # each says what the batch holds, apart from what it did
        assert report.to_json()["batch_counts"] == batch.counts()
    assert "batch Y holds: contracts 12: invoiced 12" in text.run_summary(second)


def test_a_process_whose_numbers_another_interleaved_says_they_are_no_range(
    apps: Callable[[], BillingApplication],
) -> None:
    # QA12 F8: "numbers INV-013036 .. INV-019166" where it issued 3582 of those 6131.
    def second_process_killed_after_one_chunk() -> None:
        with pytest.raises(Killed):
            runs(apps()).run(NOV, "Y", progress=after_chunks(1, kill))

    first = runs(apps()).run(NOV, "Y", progress=after_chunks(
        1, second_process_killed_after_one_chunk))
    numbers = [i.number for i in first.invoices]
    assert numbers == [f"INV-{n:06d}" for n in (*range(1, 5), *range(9, 13))]
    assert [o.outcome for o in first.outcomes.values()] == [Outcome.INVOICED] * 8
    summary = text.run_summary(first)
    assert ("numbers INV-000001 .. INV-000012: 8 of those 12 (not a contiguous range; "
            "other runs took the rest)") in summary, summary


def test_a_process_that_issued_a_contiguous_range_says_so_plainly(
    apps: Callable[[], BillingApplication],
) -> None:
    report = runs(apps()).run(NOV, "nov")
    assert "  numbers INV-000001 .. INV-000012\n" in text.run_summary(report)
