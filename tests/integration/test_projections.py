"""The read side on a real store: live build, replay, crash and resume, batch verification.

A sample book (every kind of contract, late usage, amendments, terminations, held invoices)
is billed over two cycles with payments in between, on SQLite and on PostgreSQL. The views are
built live, a few events per transaction, after every step; then thrown away and rebuilt by
replay; the two builds must be equal row for row.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import psycopg
import pytest
from eventsourcing.persistence import Tracking

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from domain.billing_run import BillingRun, Outcome, billing_run_id
from domain.billing_runs import BillingRuns, RunReport
from domain.collections import CollectionPolicy
from domain.commands import Origin
from domain.invoice import Invoice
from domain.ledger import Account, as_of_recognition
from domain.money import format_money, round_money
from domain.usage import UsageBatch
from infra import sample_book
from infra.store.url import store_env
from projections import ledger, parallel, revenue
from projections.collections import listing, record_actions
from projections.persistence import RULES_TABLE
from projections.projection import event_class, to_minor, topics
from projections.runner import Projections
from projections.verify import verify_batch
from tests.e2e.cli import billcycle, billcycle_json

CYCLE = date(2026, 12, 1)
PREVIOUS = sample_book.previous_cycle_date(CYCLE)
CONTRACTS = 30
ONE_DAY = timedelta(days=1)
USAGE_TOPIC = topics(event_class(UsageBatch, "Recorded"))[0]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return cast(str, request.getfixturevalue("fresh_pg_url"))


@pytest.fixture
def app(url: str) -> Iterator[BillingApplication]:
    app = BillingApplication(env=store_env(url))
    yield app
    app.close()


def ingest(app: BillingApplication, lines: bytes | list[dict[str, Any]]) -> None:
    if isinstance(lines, list):
        lines = b"".join(json.dumps(m).encode() + b"\n" for m in lines)
    IngestPipeline(app).process_lines(io.BytesIO(lines), "test")


def run(app: BillingApplication, cycle_date: date) -> str:
    at = datetime.combine(cycle_date, datetime.min.time(), UTC) + timedelta(hours=2)
    return BillingRuns(app, lambda: at).run(cycle_date).batch_id


def payment(n: int, invoice: Invoice, amount: Decimal, day: date) -> dict[str, Any]:
    return {"type": "payment.received", "id": f"pay-{n}", "occurred_at": f"{day}T15:00:00Z",
            "invoice_number": invoice.number, "amount": format_money(amount, invoice.currency),
            "currency": invoice.currency}


def payments(app: BillingApplication, day: date) -> list[dict[str, Any]]:
    """Full, part and over-payments of some invoices, and one payment on a credit note."""
    found = []
    for n, inv in enumerate(app.invoices()):
        if inv.total > 0 and n % 4 == 0:
            found.append(payment(n, inv, inv.total, day))
        elif inv.total > 0 and n % 4 == 1:
            found.append(payment(n, inv, inv.total / 3, day + timedelta(days=n)))
        elif inv.total > 0 and n % 4 == 2:
            found.append(payment(n, inv, inv.total + 25, day + timedelta(days=40)))
        elif inv.total < 0:
            found.append(payment(n, inv, Decimal(10), day))
    return found


def billing_history(app: BillingApplication, step: Any = lambda: None) -> list[str]:
    """Two cycles of the sample book with payments between; `step()` after each change."""
    book = dict(contracts=CONTRACTS, cycle_date=CYCLE, events=6)
    ingest(app, b"".join(sample_book.generate(**book, part="before")))  # type: ignore[arg-type]
    step()
    batches = [run(app, PREVIOUS)]
    step()
    ingest(app, payments(app, PREVIOUS + timedelta(days=10)))
    step()
    ingest(app, b"".join(sample_book.generate(**book, part="after")))  # type: ignore[arg-type]
    step()
    batches.append(run(app, CYCLE))
    step()
    # The lagging metric catches up: the held invoices go out on a retry of the batch.
    ingest(app, [{"type": "usage.watermark", "id": "wm-late", "occurred_at": f"{CYCLE}T18:00:00Z",
                  "metric": sample_book.LAGGING_METRIC, "complete_through": f"{CYCLE}T12:00:00Z",
                  "source": sample_book.WATERMARK_SOURCE}])
    BillingRuns(app, lambda: datetime(2026, 12, 2, tzinfo=UTC)).retry(batches[-1])
    step()
    ingest(app, payments(app, CYCLE + timedelta(days=5))[-5:])
    step()
    return batches


def dump(projections: Projections) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    return {name: dict(p.view.dump()) for name, p in projections.views.items()}


def built_views(
    app: BillingApplication,
) -> tuple[Projections, dict[str, dict[str, list[tuple[Any, ...]]]]]:
    """The billing history, every view caught up with it, and their rows."""
    billing_history(app)
    complete = Projections(app)
    complete.catch_up()
    return complete, dump(complete)


def test_replay_equals_the_live_build_row_for_row(app: BillingApplication) -> None:
    live = Projections(app, page_size=7)
    billing_history(app, live.catch_up)
    # Collections actions are recorded as events: the view follows them too.
    with live.view("collections").reading() as select, \
            live.view("ledger").reading() as ledger_select:
        due = listing(select, ledger_select, CYCLE).send
    assert due
    record_actions(app, due, CYCLE)
    live.catch_up()
    built = dump(live)
    assert all(rows for tables in built.values() for rows in tables.values()), "empty table"

    rebuilt = Projections(app)
    counts = rebuilt.replay()
    assert counts["ledger"] > 0
    assert dump(rebuilt) == built
    # The reports' indexes, left out of the bulk load on PostgreSQL, are all made at its end.
    assert all(p.view._complete() for p in rebuilt.views.values())


def _alter(url: str, statement: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            db.execute(statement)
        return
    with psycopg.connect(url) as db:
        db.execute(statement)


def test_a_view_made_by_another_version_is_dropped_and_built_again(
    app: BillingApplication, url: str
) -> None:
    _, built = built_views(app)
    # As an older billcycle made them: a column the audit view writes now is missing, and
    # the ledger has one it no longer writes.
    _alter(url, "ALTER TABLE audit_outcomes DROP COLUMN next_due")
    _alter(url, "ALTER TABLE ledger_documents ADD COLUMN legacy_note TEXT")

    again = Projections(app)
    assert again.rebuilt() == {
        "ledger": "its table ledger_documents was made with legacy_note no longer written",
        "audit": "its table audit_outcomes was made without next_due",
    }
    again.catch_up()
    assert dump(again) == built
    assert Projections(app).rebuilt() == {}  # as this version makes them, from now on


def test_a_drifted_view_another_process_rebuilt_meanwhile_is_not_dropped_again(
    app: BillingApplication, url: str
) -> None:
    _, built = built_views(app)
    _alter(url, "ALTER TABLE audit_outcomes DROP COLUMN next_due")
    # Two processes open the drifted view at the same moment and both find it drifted; one
    # drops it first and builds it again...
    first = Projections(app, ["audit"])
    assert first.rebuilt() == {"audit": "its table audit_outcomes was made without next_due"}
    first.catch_up()
    # ... and the other's drop, coming after, finds it current and leaves the build alone.
    late = first.view("audit")
    assert late.drop(unless_current=True) is False
    assert dump(first)["audit"] == built["audit"]
    _alter(url, "ALTER TABLE audit_outcomes ADD COLUMN legacy TEXT")
    assert late.drop(unless_current=True) is True  # drifted again: dropped
    assert late.position() == 0


def test_a_view_built_by_other_rules_is_dropped_and_built_again(
    app: BillingApplication, url: str
) -> None:
    _, built = built_views(app)
    # As an older billcycle's revenue rules wrote it (the same columns, other amounts), in a
    # store from before views recorded their rules (so built by version 1).
    _alter(url, "UPDATE revenue_schedule SET amount = amount + 1")
    _alter(url, f"DROP TABLE {RULES_TABLE}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(revenue.RevenueProjection, "rules", 2)  # this release's rules
        again = Projections(app)
        assert again.rebuilt() == {
            "revenue": "it was built by version 1 of the revenue rules; this billcycle builds "
                       "version 2",
        }
        again.catch_up()
        assert dump(again) == built
        assert Projections(app).rebuilt() == {}  # recorded as built by version 2
    # The same store opened by a billcycle of the older rules is rebuilt by them in turn.
    assert Projections(app).rebuilt() == {
        "revenue": "it was built by version 2 of the revenue rules; this billcycle builds "
                   "version 1",
    }


def test_a_catch_up_far_behind_builds_the_same_views_in_two_processes(
    app: BillingApplication, url: str
) -> None:
    """The first catch-up after a billing run is as far behind as a replay: on PostgreSQL it
    builds the audit and collections views in a second process, as a replay does, and that
    process runs the collections process (with the policy given) before the collections
    view; the views come out as a one-process replay builds them."""
    billing_history(app)
    policy = CollectionPolicy.parse("reminder:3,final_notice:20")
    Projections(app, ["audit"], parallel=False).build()  # one view ahead of the others
    second_processes: list[Any] = []
    started = parallel.start

    def start(*args: Any) -> parallel.Helper:
        second_processes.append(args)
        return started(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parallel, "start", start)
        far_behind = Projections(app, policy=policy, parallel_after=1)
        counts = far_behind.catch_up()
    assert counts["audit"] == 0 and counts["ledger"] > 0 and counts["collections"] > 0
    assert counts["collections-process"] > 0
    if url.startswith("postgres"):
        (args,) = second_processes  # env, views, page size, topics read here, rebuilding, policy
        assert sorted(args[1]) == ["audit", "collections"] and args[4:] == (False, policy.text())
    else:  # the embedded store builds every view in its one process
        assert not second_processes
    built = dump(far_behind)
    steps = {row[1] for row in built["collections"]["collection_steps"]}
    assert steps == {"reminder+3", "final_notice+20"}
    one_process = Projections(app, parallel=False)
    one_process.replay()
    assert dump(one_process) == built
    assert all(p.view._complete() for p in far_behind.views.values())


def _keys_and_indexes(url: str) -> set[tuple[str, str]]:
    """The view tables' indexes (with their definitions) and constraints, from the catalog."""
    with psycopg.connect(url) as conn:
        return set(conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " UNION SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = current_schema()::regnamespace").fetchall())


def test_a_rebuild_on_postgres_adds_the_keys_and_indexes_after_its_load(
    app: BillingApplication, url: str
) -> None:
    """A replay loads the append-only tables without their primary keys and the reports'
    indexes, and ends with the very keys and indexes of a view built live; duplicates are
    refused again once it ends."""
    if not url.startswith("postgres"):
        pytest.skip("the embedded store's views keep their keys")
    live = Projections(app)
    billing_history(app, live.catch_up)
    built, catalog = dump(live), _keys_and_indexes(url)
    append_only = {t.name for p in live.views.values() for t in p.view.tables if t.append_only}
    assert {"ledger_journal", "revenue_schedule", "audit_lines"} <= append_only
    during: list[set[tuple[str, str]]] = []

    def look(name: str, position: int, target: int) -> None:
        if not during:
            during.append(_keys_and_indexes(url))

    Projections(app, on_page=look).replay()
    names = {name for name, _ in during[0]}
    assert not {f"{t}_pkey" for t in append_only} & names
    assert {"ledger_documents_pkey", "collections_pkey", "audit_batches_pkey"} <= names
    assert _keys_and_indexes(url) == catalog
    assert dump(live) == built
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO ledger_journal SELECT * FROM ledger_journal LIMIT 1")
    # The second process of a replay (projections/parallel.py) opens the emptied views as
    # they are: the replay makes the keys and indexes at its end.
    for p in live.views.values():
        p.view.drop()
    emptied = _keys_and_indexes(url)
    Projections(app, ["audit", "collections"], rebuilding=True)
    assert _keys_and_indexes(url) == emptied


def test_a_page_issuing_and_paying_a_document_finds_its_contract_in_the_view(
    app: BillingApplication,
) -> None:
    """The contracts in one page, their invoices and payments in the next: a payment's date
    is read in its contract's timezone, which that page must find in the view."""
    live = Projections(app)
    steps = 0

    def only_the_first_step() -> None:
        nonlocal steps
        steps += 1
        if steps == 1:
            live.catch_up()

    billing_history(app, only_the_first_step)
    live.catch_up()
    built = dump(live)
    live.replay()
    assert dump(live) == built


def test_a_replay_killed_midway_resumes_to_the_same_tables(app: BillingApplication) -> None:
    complete, built = built_views(app)

    class Killed(Exception):
        pass

    pages = 0

    def kill_on_the_fifth_page(name: str, position: int, target: int) -> None:
        nonlocal pages
        pages += 1
        if pages == 5:
            raise Killed

    doomed = Projections(app, page_size=3, on_page=kill_on_the_fifth_page)
    with pytest.raises(Killed):
        doomed.replay()
    assert dump(doomed) != built  # stopped part-way
    resumed = Projections(app, page_size=11)  # opening the views makes any missing index
    assert all(p.view._complete() for p in resumed.views.values())
    resumed.catch_up()
    assert dump(complete) == built


def test_a_replay_process_killed_with_sigkill_resumes_to_the_same_tables(
    app: BillingApplication, url: str
) -> None:
    complete, built = built_views(app)
    replay = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "--db", url, "replay", "--page-size", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    audit = complete.view("audit")
    # Kill it once the audit view (built by the second process on PostgreSQL) is part-way.
    while time.monotonic() < deadline and replay.poll() is None:
        if 0 < audit.position() < (app.recorder.max_notification_id() or 0) // 2:
            break
        time.sleep(0.005)
    # On PostgreSQL the audit and collections views are built by a second process
    # (projections/parallel.py): it must die with the replay, not go on writing.
    helpers = _children(replay.pid)
    assert not url.startswith("postgres") or helpers, "no second process"
    os.kill(replay.pid, signal.SIGKILL)
    assert replay.wait() == -signal.SIGKILL, "replay finished before it could be killed"
    deadline = time.monotonic() + 2  # the parent-death signal comes at once
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(_alive(pid) for pid in helpers), "the second process outlived the replay"
    head = app.recorder.max_notification_id() or 0
    positions = {name: p.view.position() for name, p in complete.views.items()}
    assert any(at < head for at in positions.values())
    time.sleep(0.3)
    assert {name: p.view.position() for name, p in complete.views.items()} == positions
    subprocess.run([sys.executable, "-m", "infra.cli", "--db", url, "project"], check=True,
                   capture_output=True)
    assert dump(complete) == built


def test_a_failure_of_the_second_process_is_reported(app: BillingApplication) -> None:
    helper = parallel.start(dict(app.env), ["no-such-view"], 10, [])
    with pytest.raises(parallel.SecondProcessFailed, match="no projection no-such-view"):
        helper.result()
    helper.stop()


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def _alive(pid: int) -> bool:
    """Whether the process still runs (a zombie waiting to be reaped has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_every_batch_verifies_against_the_log(app: BillingApplication) -> None:
    batches = billing_history(app)
    for batch_id in batches:
        result = verify_batch(app, batch_id)
        assert result.identical, result.to_json()["differences"]
        assert result.invoices > 0
        # Each contract once, as the batch counts it: the retry decided the held again.
        batch = app.get_or_none(billing_run_id(batch_id), BillingRun)
        assert batch is not None and batch.counts() == {"contracts": result.contracts,
                                                        **result.outcomes}
    retried = verify_batch(app, batches[-1])
    assert retried.attempts == 2  # the run and its retry
    assert sum(retried.contracts_by_attempt) > retried.contracts


def priced_usage_event(app: BillingApplication) -> tuple[int, int]:
    """Where a usage record that an invoice line summed and priced per unit is logged: the
    position of its batch event and its index among the batch's records."""
    lines = [(i, line) for i in app.invoices() for line in i.lines
             if line["kind"] == "usage" and line["basis"].get("aggregation") == "sum"
             and Decimal(line["amount"]) > 0]
    for invoice, line in lines:
        start, end = (datetime.fromisoformat(line[k]) for k in ("period_start", "period_end"))
        for n in app.recorder.select_notifications(1, 100_000, topics=[USAGE_TOPIC]):
            e: Any = app.mapper.to_domain_event(n)
            for i, u in enumerate(UsageBatch.usage(e.records)):
                if (u.customer_id, u.metric) == (invoice.customer_id, line["basis"]["metric"]) \
                        and start + ONE_DAY <= u.occurred_at.replace(tzinfo=None) < end - ONE_DAY:
                    return n.id, i
    raise AssertionError("no priced usage in the book")


def tamper(url: str, position: int, change: Any) -> None:
    """Change the stored state of the event at `position` behind the application's back."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            (state,) = db.execute("SELECT state FROM stored_events WHERE rowid = ?",
                                  (position,)).fetchone()
            db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?",
                       (change(state), position))
        return
    with psycopg.connect(url) as db:
        (state,) = db.execute("SELECT state FROM billcycle_events WHERE notification_id = %s",
                              (position,)).fetchone() or ()
        db.execute("UPDATE billcycle_events SET state = %s WHERE notification_id = %s",
                   (change(bytes(state)), position))


def more_usage(index: int) -> Callable[[bytes], bytes]:
    def change(state: bytes) -> bytes:
        event = json.loads(state)
        record = event["records"][index]  # [message id, fingerprint, customer, metric, qty...]
        record[4] = str(Decimal(record[4]) + 100_000)
        return json.dumps(event, separators=(",", ":")).encode()
    return change


def test_verify_shows_what_a_tampered_usage_event_changes(url: str) -> None:
    app = BillingApplication(env=store_env(url))
    batches = billing_history(app)
    position, index = priced_usage_event(app)
    app.close()
    tamper(url, position, more_usage(index))
    app = BillingApplication(env=store_env(url))
    try:
        differing = [d for b in batches for d in verify_batch(app, b).differences]
        assert any(d.what == "total" for d in differing), differing
        assert any(d.what.endswith(".quantity") for d in differing), differing
    finally:
        app.close()


def test_a_contract_changed_while_its_batch_ran_is_not_a_difference(
    app: BillingApplication,
) -> None:
    # QA (helper-25, F1, the rest): usage a live consume logged after the batch started, read
    # by the run for a contract it decided later, made verify say DIFFERENT.
    per_call_contracts(app, "abc")
    arrived: list[int] = []

    def live_consume(done: int, total: int) -> None:  # after the first chunk, ct_c not decided
        if not arrived:
            arrived.append(done)
            ingest(app, [{"type": "usage", "id": "u-c-2", "occurred_at": "2026-10-20T00:00:00Z",
                          "customer_id": "cus_c", "metric": "api_calls", "quantity": "50"}])

    at = datetime(2026, 11, 1, 2, tzinfo=UTC)
    batch_id = BillingRuns(app, lambda: at, chunk_size=1).run(
        date(2026, 11, 1), progress=live_consume).batch_id
    assert arrived == [1]
    assert [i.total for i in app.invoices()] == [Decimal("1.00"), Decimal("1.00"),
                                                 Decimal("1.50")]
    result = verify_batch(app, batch_id)
    assert result.identical, result.to_json()["differences"]
    [changed] = result.changed_during_batch
    assert changed.contract_id == "ct_c" and changed.decided_through > changed.started_at


def per_call_contracts(app: BillingApplication, names: str, metric: str = "api_calls") -> None:
    """Monthly contracts priced per call of `metric`, ct_<name> of cus_<name>, with October
    usage."""
    per_call = {"id": "api", "kind": "usage", "metric": metric,
                "pricing": {"model": "per_unit", "unit_amount": "0.01"}}
    ingest(app, [
        {"type": "contract.created", "id": f"c-{c}", "occurred_at": "2026-10-01T00:00:00Z",
         "contract_id": f"ct_{c}", "customer_id": f"cus_{c}", "currency": "USD",
         "start_date": "2026-10-01", "billing_frequency": "monthly", "components": [per_call]}
        for c in names
    ] + [{"type": "usage", "id": f"u-{c}", "occurred_at": "2026-10-10T00:00:00Z",
          "customer_id": f"cus_{c}", "metric": metric, "quantity": "100"} for c in names])


def two_processes_on_one_batch_id(app: BillingApplication) -> None:
    """Batch Y billed by two processes at once, their steps interleaved as they can be: both
    attempts begin before either records an outcome; each invoices a contract; then the
    first, its save refused by the second's and the batch read again, finds the second's
    contract billed and records nothing due for it."""
    per_call_contracts(app, "ab")
    nov = date(2026, 11, 1)
    at = datetime(2026, 11, 1, 2, tzinfo=UTC)
    first, second = BillingRuns(app, lambda: at), BillingRuns(app, lambda: at)
    runs = [first._begin(nov, "Y", dry_run=False), second._begin(nov, "Y", dry_run=False)]
    reports = [RunReport("Y", nov, False, {}) for _ in runs]
    ctxs = [runs_._context(nov, manifest) for runs_, (_, manifest) in zip(
        (first, second), runs, strict=True)]
    run = first._settle(runs[0][0], ["ct_a"], ctxs[0], False, reports[0])  # refused once
    second._finish(second._settle(runs[1][0], ["ct_b"], ctxs[1], False, reports[1]),
                   reports[1], False)
    run = app.repository.get(run.id)  # as after a save refused by the second's
    first._finish(first._settle(run, ["ct_b"], ctxs[0], False, reports[0]), reports[0], False)
    assert reports[0].counts()["invoiced"] == reports[1].counts()["invoiced"] == 1
    assert reports[0].outcomes["ct_b"].outcome is Outcome.NOT_DUE


def test_two_processes_on_one_batch_id_verify_every_invoice_of_the_batch(
    app: BillingApplication,
) -> None:
    # QA12 F2: every outcome was filed under the latest attempt, the second process's: the
    # first's "nothing due" replaced the second's "invoiced", whose invoice went unchecked
    # (listed as billed elsewhere, by the same batch) under "all identical".
    two_processes_on_one_batch_id(app)
    result = verify_batch(app, "Y")
    assert result.identical, result.to_json()["differences"]
    assert (result.attempts, result.invoices, result.contracts) == (2, 2, 2)
    assert result.contracts_by_attempt == [2, 1]  # ct_b: invoiced by one, nothing due by one
    assert result.outcomes == {"invoiced": 2, "held": 0, "failed": 0, "not_due": 0}
    assert [(b.contract_id, b.batch_id) for b in result.billed_elsewhere] == [("ct_b", "Y")]


def complete_through(metric: str, day: str) -> dict[str, Any]:
    return {"type": "usage.watermark", "id": f"w-{metric}-{day}",
            "occurred_at": f"{day}T00:00:00Z", "metric": metric, "complete_through":
            f"{day}T00:00:00Z"}


def two_processes_holding_the_same_contracts(app: BillingApplication) -> None:
    """Batch Y billed by two processes at once: ct_a and ct_b price api_calls, complete only
    through October 20, ct_c prices sms, complete through October 20 when the first process
    began and through November 1 when the second did. Both hold ct_a and ct_b; the first
    holds ct_c, and the second, deciding the held contracts again, invoices it."""
    per_call_contracts(app, "ab")
    per_call_contracts(app, "c", metric="sms")
    ingest(app, [complete_through("api_calls", "2026-10-20"),
                 complete_through("sms", "2026-10-20")])
    nov = date(2026, 11, 1)
    at = datetime(2026, 11, 1, 2, tzinfo=UTC)
    first, second = BillingRuns(app, lambda: at), BillingRuns(app, lambda: at)
    begun = [first._begin(nov, "Y", dry_run=False)]
    ingest(app, [complete_through("sms", "2026-11-01")])
    begun.append(second._begin(nov, "Y", dry_run=False))
    for runs, (run, manifest) in zip((first, second), begun, strict=True):
        report = RunReport("Y", nov, False, {})
        # Each save is refused once by the other's (the batch read again, the held decided
        # again).
        runs._finish(runs._settle(run, ["ct_a", "ct_b", "ct_c"], runs._context(nov, manifest),
                                  False, report), report, False)
        assert report.outcomes["ct_a"].outcome is report.outcomes["ct_b"].outcome \
            is Outcome.HELD
    assert report.outcomes["ct_c"].outcome is Outcome.INVOICED


def test_contracts_decided_by_two_attempts_are_counted_once(
    app: BillingApplication, url: str,
) -> None:
    # QA (LOW): two processes on one batch id both held the same 1,000 contracts of a book of
    # 20,000, and verify said "21000 contract outcomes": each attempt's outcomes were added.
    two_processes_holding_the_same_contracts(app)
    result = verify_batch(app, "Y")
    assert result.identical, result.to_json()["differences"]
    assert (result.attempts, result.contracts, result.invoices) == (2, 3, 1)
    assert result.contracts_by_attempt == [3, 3]  # every outcome is billed again
    # Held by both: held; held by one, invoiced by the other: invoiced (the invoice wins).
    assert result.outcomes == {"invoiced": 1, "held": 2, "failed": 0, "not_due": 0}
    shown = billcycle_json(url, "batch", "show", "Y")
    assert shown["counts"] == {"contracts": 3, **result.outcomes}
    said = billcycle(url, "batch", "verify", "Y").stdout
    assert said.startswith("batch Y (cycle date 2026-11-01): 3 contracts in 2 attempts "
                           "recomputed from the log, 1 invoice, 2 held: all identical\n"), said
    assert "6 outcomes recorded by the 2 attempts (3, 3) for these 3 contracts" in said


def test_outcomes_stored_before_they_named_their_attempt_verify_every_invoice(
    app: BillingApplication, url: str,
) -> None:
    two_processes_on_one_batch_id(app)
    recorded = topics(event_class(BillingRun, "OutcomesRecorded"))
    positions = [n.id for n in app.recorder.select_notifications(1, 100, topics=recorded)]
    for position in positions:
        tamper(url, position, without_attempt)
    app = BillingApplication(env=store_env(url))
    try:
        result = verify_batch(app, "Y")
    finally:
        app.close()
    assert result.identical, result.to_json()["differences"]
    assert (result.attempts, result.invoices, result.billed_elsewhere) == (2, 2, [])


def without_attempt(state: bytes) -> bytes:
    event = json.loads(state)
    del event["attempt"]
    return json.dumps(event, separators=(",", ":")).encode()


def api_calls(customer: str, message_id: str, day: int, quantity: str) -> dict[str, Any]:
    return {"type": "usage", "id": message_id, "occurred_at": f"2026-10-{day}T00:00:00Z",
            "customer_id": f"cus_{customer}", "metric": "api_calls", "quantity": quantity}


@pytest.mark.postgres
def test_a_contract_read_from_meters_behind_the_log_is_not_a_difference(
    fresh_pg_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # QA12 F3: a live consume logged usage while the batch ran; the run read meters folded up
    # to a position between the batch start and the outcome's decided_through (usage logged
    # after it was still in the meter backlog). Billed again as of either, the invoice
    # differed, and verify said DIFFERENT (exit 1) on a batch whose money was right.
    app = BillingApplication(env=store_env(fresh_pg_url))
    try:
        per_call_contracts(app, "ab")
        fold, folds = app.store.update_meters, []

        def live_consume(most: int | None = None) -> int:
            folds.append(most)
            if len(folds) != 2:
                return fold(most)
            # The second fold brings the chunk's meters up to date (MeterReads): usage logged
            # before it is read, usage logged after it, before the reads end, is not. The
            # chunk's two contracts were read at revisions of their own, ct_b's the lower.
            for c in "ba":
                ingest(app, [api_calls(c, f"u-{c}-2", 20, "50")])
            folded = fold(most)
            IngestPipeline(app).process([Origin("test", f"line {n}", json.dumps(
                api_calls(c, f"u-{c}-3", 21, "25")).encode()) for n, c in enumerate("ab")])
            return folded

        monkeypatch.setattr(app.store, "update_meters", live_consume)
        at = datetime(2026, 11, 1, 2, tzinfo=UTC)
        batch_id = BillingRuns(app, lambda: at).run(date(2026, 11, 1)).batch_id
        monkeypatch.undo()
        # The usage logged after the fold is left to a later invoice.
        assert [i.total for i in app.invoices()] == [Decimal("1.50")] * 2
        result = verify_batch(app, batch_id)
        assert result.identical, result.to_json()["differences"]
        assert [c.contract_id for c in result.changed_during_batch] == ["ct_a", "ct_b"]
        read = app.recorder.select_notifications(1, 100, topics=[USAGE_TOPIC])[2]  # u-a-2
    finally:
        app.close()
    # A different invoice still differs: the usage it was read with, changed in the log.
    tamper(fresh_pg_url, read.id, more_usage(0))
    app = BillingApplication(env=store_env(fresh_pg_url))
    try:
        differing = verify_batch(app, batch_id).differences
        assert {d.what for d in differing} >= {"total", "lines[0].quantity"}, differing
    finally:
        app.close()


def test_the_reports_agree_with_the_journal_and_the_invoices(app: BillingApplication) -> None:
    billing_history(app)
    projections = Projections(app)
    projections.catch_up()
    invoices = list(app.invoices())
    for as_of in (PREVIOUS, PREVIOUS + timedelta(days=17), CYCLE, CYCLE + timedelta(days=45)):
        with projections.view("ledger").reading() as lsel, \
                projections.view("revenue").reading() as rsel:
            items = ledger.open_items(lsel, as_of)
            aging = ledger.ar_aging(items)
            figures = revenue.figures(rsel, as_of)
            per_contract = revenue.figures(rsel, as_of, by_contract=True)
            rows = ledger.journal_rows(lsel, as_of)
            extra = revenue.documents_in_progress(rsel, as_of)
        balances: dict[tuple[str, str], int] = {}
        for _, _, _, _, _, _, cur, account, amount, _ in rows:
            balances[(cur, account)] = balances.get((cur, account), 0) + amount
        for doc in extra:
            entry = as_of_recognition(doc, as_of)
            for p in entry.postings if entry else ():
                key = (doc.currency, p.account.value)
                balances[key] = balances.get(key, 0) + to_minor(p.amount, doc.currency)
        for (currency,), f in figures.items():
            assert f.billed == f.recognized + f.deferred
            assert -balances.get((currency, Account.REVENUE.value), 0) == f.recognized
            assert -balances.get((currency, Account.DEFERRED_REVENUE.value), 0) == f.deferred
            issued = [i for i in invoices if i.currency == currency and i.issue_date <= as_of]
            assert f.billed == sum(to_minor(i.total, currency) for i in issued)
        for f in per_contract.values():
            assert f.billed == f.recognized + f.deferred
        for currency, buckets in aging.items():
            receivable = balances.get((currency, Account.RECEIVABLE.value), 0)
            assert to_minor(Decimal(buckets["total"]), currency) == receivable
            assert receivable == sum(i.open for i in items if i.currency == currency)


def test_projections_racing_each_other_and_billing_end_as_a_replay(
    app: BillingApplication, url: str
) -> None:
    """Two followers (say `project --follow` and a report catching up) and the billing at once."""
    stop = threading.Event()
    errors: list[str] = []
    # Started one after the other: two applications creating their tables at the same moment
    # collide on PostgreSQL (the library's CREATE OR REPLACE FUNCTION).
    others = [BillingApplication(env=store_env(url)) for _ in range(2)]

    def follow(other: BillingApplication) -> None:
        try:
            Projections(other, page_size=5).follow(stop, interval=0.01)
        except BaseException:  # reported by the test below
            errors.append(traceback.format_exc())
        finally:
            other.close()

    followers = [threading.Thread(target=follow, args=(other,)) for other in others]
    for t in followers:
        t.start()
    try:
        billing_history(app)
    finally:
        stop.set()
        for t in followers:
            t.join()
    assert not errors, errors
    live = Projections(app)
    live.catch_up()
    built = dump(live)
    live.replay()
    assert dump(live) == built


def test_one_event_at_a_time_builds_the_same_view(app: BillingApplication) -> None:
    """The library's one-event interface (process_event) and pages of many agree."""
    billing_history(app)
    paged = Projections(app, ["ledger", "audit"])
    paged.replay()
    built = dump(paged)
    for projection in paged.views.values():
        projection.view.drop()
        for n in app.recorder.select_notifications(1, 10**6, topics=projection.topics):
            projection.process_event(app.mapper.to_domain_event(n), Tracking(app.name, n.id))
    assert dump(paged) == built


def test_a_projection_process_follows_the_log_until_told_to_stop(
    app: BillingApplication, url: str
) -> None:
    """`billcycle project --follow` as its own process, as on PostgreSQL deployments."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "--db", url, "--json", "project", "--follow",
         "--interval", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        billing_history(app)
        views = Projections(app, ["ledger", "audit"])
        head = app.recorder.max_notification_id() or 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
                p.view.position() < head for p in views.views.values()):
            time.sleep(0.05)
        caught_up = all(p.view.position() >= head for p in views.views.values())
    finally:
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
    assert caught_up, f"the follower did not catch up to {head}; its stderr:\n{err}"
    assert follower.returncode == 0, err
    summary = json.loads(out)
    assert summary["projections"]["ledger"]["events"] > 0


def test_payments_in_one_page_settle_collections_started_in_earlier_pages(
    app: BillingApplication
) -> None:
    # The collections process reads the collections a page's payments settle in one go: two
    # payments of one invoice in the same page, on collections started pages before.
    ingest(app, b"".join(sample_book.generate(
        contracts=CONTRACTS, cycle_date=CYCLE, events=6, part="before")))
    run(app, PREVIOUS)
    projections = Projections(app, ["collections"], page_size=5)
    projections.catch_up()
    paid = [inv for inv in app.invoices() if inv.total > 0][:3]
    day = PREVIOUS + timedelta(days=3)
    shares = [(inv, share) for inv in paid
              for share in (inv.total / 3, inv.total - round_money(inv.total / 3, inv.currency))]
    shares.append((paid[0], Decimal(1)))  # an over-payment once it is settled
    ingest(app, [payment(n, inv, share, day) for n, (inv, share) in enumerate(shares)])
    projections.page_size = 1000
    projections.catch_up()
    rows = projections.view("collections").select(
        "SELECT number, amount, paid, status FROM collections WHERE number IN (?, ?, ?)"
        " ORDER BY number", [inv.number for inv in paid])
    expected = sorted((inv.number, to_minor(inv.total, inv.currency)) for inv in paid)
    assert [(number, amount) for number, amount, _, _ in rows] == expected
    assert all(paid_units >= amount and status != "open" for _, amount, paid_units, status in rows)
