"""The store adapters on SQLite and PostgreSQL: meters, revisions, atomicity and indexes."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import pytest
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, Recording, Tracking
from eventsourcing.postgres import PostgresProcessRecorder
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from domain.ports import BillingStore
from domain.usage import MeterIncrement, MeterReading, MeterRequest, meter_increment
from infra.store.postgres import PostgresBillingRecorder
from infra.store.sqlite import SQLiteBillingRecorder
from infra.store.url import store_env

T0 = datetime(2024, 3, 1, tzinfo=UTC)
DAY_LATER = T0 + timedelta(days=1)


class Note(Aggregate):
    """A tiny aggregate whose id comes from its name, so a second one is a duplicate."""

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"note:{name}")

    @event("Written")
    def __init__(self, name: str) -> None:
        self.name = name

    @event("Amended")
    def amend(self) -> None:
        pass


class StoreApp(Application[UUID]):
    def write(
        self, *names: str, tracking: Tracking | None = None, **kwargs: Any
    ) -> list[Recording[UUID]]:
        """Save new notes with the batch kwargs, tracked the way the library tracks processing.

        Application.save() cannot take `tracking=` (EventStore.put would get it twice), so
        this records a ProcessingEvent, as the library's EventSourcedProjection does.
        """
        if "meter_increments" in kwargs:
            # As if a contract counted "user": PostgreSQL keeps distinct values only of
            # counted properties (tests/integration/test_counted_properties.py).
            kwargs.setdefault("counted_properties", ["user"])
        processing = ProcessingEvent[UUID](tracking=tracking)
        processing.collect_events(*(Note(name) for name in names), **kwargs)
        return self._record(processing)

    @property
    def store(self) -> BillingStore:
        assert isinstance(self.recorder, SQLiteBillingRecorder | PostgresBillingRecorder)
        return self.recorder


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh store: a SQLite file, or a new PostgreSQL database from tests/conftest.py."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'store.db'}"
    return cast(str, request.getfixturevalue("fresh_pg_url"))


@pytest.fixture
def app(store_url: str) -> Iterator[StoreApp]:
    application = StoreApp(env=store_env(store_url))
    yield application
    application.close()


def usage(
    quantity: str,
    at: datetime,
    event_id: str,
    *,
    customer: str = "cus_1",
    metric: str = "api_calls",
    contract: str | None = None,
    **properties: str,
) -> MeterIncrement:
    return meter_increment(
        customer, metric, contract, Decimal(quantity), at, event_id, dict(properties)
    )


def read(app: StoreApp, start: datetime = T0, end: datetime = DAY_LATER, **kw: Any) -> MeterReading:
    tags: list[str] = kw.pop("tags", [""])
    return app.store.read_meter(
        kw.pop("customer", "cus_1"), "api_calls", tags, start, end, kw.pop("unique", None)
    )


# --- meters ----------------------------------------------------------------------------------


def test_meters_fold_exactly_across_saves(app: StoreApp) -> None:
    # 35 significant digits: past the 28 that Python's default Decimal context keeps.
    big = "12345678901234567890.123456789012345"
    app.write("n1", meter_increments=[
        usage("0.1", T0 + timedelta(minutes=1), "e1"),
        usage("0.2", T0 + timedelta(minutes=2), "e2"),
        usage(big, T0 + timedelta(minutes=3), "e3"),
    ])  # fmt: skip
    # A second save adds to the stored bucket (SQL combine or Python merge) and opens another.
    app.write("n2", meter_increments=[
        usage("0.000000000000001", T0 + timedelta(minutes=4), "e4"),
        usage("7", T0 + timedelta(minutes=20), "e5"),
    ])  # fmt: skip

    whole = read(app)
    assert whole.quantity_sum == Decimal("12345678901234567897.423456789012346")
    assert str(whole.quantity_sum) == "12345678901234567897.423456789012346"
    assert whole.event_count == 5
    assert whole.quantity_max == Decimal(big)

    # [start, end): the first bucket only.
    first = read(app, T0, T0 + timedelta(minutes=15))
    assert first.quantity_sum == Decimal("12345678901234567890.423456789012346")
    assert first.event_count == 4


def test_latest_max_and_unique_count(app: StoreApp) -> None:
    app.write("n1", meter_increments=[
        usage("5", T0 + timedelta(minutes=1), "evt_b", user="u1"),
        # Same instant, smaller event id: not the latest.
        usage("9", T0 + timedelta(minutes=1), "evt_a", user="u2"),
        usage("3", T0 + timedelta(minutes=20), "evt_c", user="u1"),
        usage("4", T0 + timedelta(minutes=21), "evt_d", contract="ct_1", user="u3"),
    ])  # fmt: skip
    # Arrives later but happened earlier: changes sum and count, not latest.
    app.write("n2", meter_increments=[usage("1", T0 + timedelta(minutes=2), "evt_z", user="u2")])

    untagged = read(app, unique="user")
    assert untagged == MeterReading(
        quantity_sum=Decimal(18),
        event_count=4,
        quantity_max=Decimal(9),
        latest_quantity=Decimal(3),
        unique_count=2,
        revision=untagged.revision,
    )
    both = read(app, tags=["", "ct_1"], unique="user")
    assert (both.quantity_sum, both.latest_quantity, both.unique_count) == (
        Decimal(22),
        Decimal(4),
        3,
    )
    assert read(app, tags=["ct_1"], unique="user").unique_count == 1
    # Within the first bucket alone, the late arrival is the latest.
    assert read(app, T0, T0 + timedelta(minutes=15)).latest_quantity == Decimal(1)
    assert read(app, unique=None).unique_count == 0
    assert read(app, unique="region").unique_count == 0
    assert read(app, customer="cus_unknown") == MeterReading()

    # Many reads in one round trip answer exactly as one read at a time.
    start, end = T0 - timedelta(days=1), T0 + timedelta(days=1)
    requests = [
        MeterRequest(customer, "api_calls", tags, start, stop, unique)
        for customer in ("cus_1", "cus_unknown")
        for tags in (("",), ("", "ct_1"), ("ct_1",))
        for stop in (T0 + timedelta(minutes=15), end)
        for unique in ("user", None)
    ]
    assert app.store.read_meters(requests) == [
        app.store.read_meter(r.customer_id, r.metric, r.contract_tags, r.start, r.end,
                             r.unique_property)
        for r in requests
    ]
    assert app.store.read_meters([]) == []


def test_untagged_usage_within_windows_is_read_besides_the_tags(app: StoreApp) -> None:
    # An operator gave [T0+15m, T0+45m) of the untagged usage to ct_1: its reads take the
    # untagged buckets of that window with its own, and every aggregate sees exactly those.
    app.write("n1", meter_increments=[
        usage("5", T0 + timedelta(minutes=1), "e1", user="u1"),
        usage("9", T0 + timedelta(minutes=20), "e2", user="u2"),
        usage("2", T0 + timedelta(minutes=50), "e3", user="u3"),
        usage("4", T0 + timedelta(minutes=25), "e4", contract="ct_1", user="u2"),
        usage("1", T0 + timedelta(minutes=55), "e5", contract="ct_2", user="u4"),
    ])  # fmt: skip
    window = ((T0 + timedelta(minutes=15), T0 + timedelta(minutes=45)),)
    within = app.store.read_meter("cus_1", "api_calls", ["ct_1"], T0, DAY_LATER, "user",
                                  window)
    assert (within.quantity_sum, within.event_count, within.quantity_max,
            within.latest_quantity, within.unique_count) == (Decimal(13), 2, Decimal(9),
                                                             Decimal(4), 1)
    two = ((T0, T0 + timedelta(minutes=15)), (T0 + timedelta(minutes=45), DAY_LATER))
    rest = app.store.read_meter("cus_1", "api_calls", ["ct_1"], T0, DAY_LATER, "user", two)
    assert (rest.quantity_sum, rest.event_count, rest.unique_count) == (Decimal(11), 3, 3)
    # Batched with plain reads, each answers as on its own.
    requests = [MeterRequest("cus_1", "api_calls", ("ct_1",), T0, DAY_LATER, "user", window),
                MeterRequest("cus_1", "api_calls", ("",), T0, DAY_LATER, "user"),
                MeterRequest("cus_1", "api_calls", ("ct_2",), T0, DAY_LATER, None, two)]
    assert app.store.read_meters(requests) == [
        app.store.read_meter(r.customer_id, r.metric, r.contract_tags, r.start, r.end,
                             r.unique_property, r.untagged_within)
        for r in requests
    ]


QUARTER = timedelta(minutes=15)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(  # eight hours: events often share a quarter with a window's or the span's bounds
    events=st.lists(st.tuples(st.integers(0, 32 * 15 - 1), st.integers(1, 9),
                              st.sampled_from(["", "ct_1", "ct_2"]),
                              st.sampled_from(["u1", "u2", "u3"])), max_size=12),
    tags=st.sampled_from([("ct_1",), ("ct_1", ""), ("",)]),
    windows=st.lists(st.tuples(st.integers(0, 31), st.integers(1, 8)), max_size=3),
    span=st.tuples(st.integers(0, 10), st.integers(11, 32)),
)
@example(events=[(75, 1, "", "u1")], tags=("ct_1",), windows=[(0, 5)], span=(0, 11))
@example(events=[(75, 1, "", "u1")], tags=("ct_1",), windows=[(5, 5)], span=(0, 11))
def test_a_meter_read_is_exactly_its_buckets_with_the_windows_untagged_ones(
    app: StoreApp, events: list[tuple[int, int, str, str]], tags: tuple[str, ...],
    windows: list[tuple[int, int]], span: tuple[int, int],
) -> None:
    customer = f"cus_{uuid4().hex[:12]}"  # a customer of its own: the store is shared
    increments = [usage(str(q), T0 + timedelta(minutes=m), f"e{i:02}", customer=customer,
                        contract=tag or None, user=user)
                  for i, (m, q, tag, user) in enumerate(events)]
    if increments:
        app.write(customer, meter_increments=increments)
    # Bounds on quarters, as every read's are: an event counts with its bucket.
    within = tuple((T0 + lo * QUARTER, T0 + (lo + n) * QUARTER) for lo, n in windows)
    start, end = T0 + span[0] * QUARTER, T0 + span[1] * QUARTER
    read = app.store.read_meter(customer, "api_calls", tags, start, end, "user", within)
    counted = sorted(
        (T0 + timedelta(minutes=m), f"e{i:02}", Decimal(q), user)
        for i, (m, q, tag, user) in enumerate(events)
        if start <= T0 + timedelta(minutes=m) < end
        and (tag in tags or (tag == "" and any(lo <= T0 + timedelta(minutes=m) < hi
                                               for lo, hi in within))))
    assert (read.quantity_sum, read.event_count, read.quantity_max, read.latest_quantity,
            read.unique_count) == (
        sum((c[2] for c in counted), Decimal(0)), len(counted),
        max((c[2] for c in counted), default=Decimal(0)),
        counted[-1][2] if counted else Decimal(0), len({c[3] for c in counted}))


def test_naive_times_are_refused(app: StoreApp) -> None:
    # The database would read a naive time in whatever zone it assumes.
    with pytest.raises(ValueError, match="no timezone"):
        read(app, T0.replace(tzinfo=None))
    naive = usage("1", T0, "e1")._replace(occurred_at=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="no timezone"):
        app.write("n1", meter_increments=[naive])
    assert app.store.max_notification_id() is None


# --- revisions -------------------------------------------------------------------------------


def test_revisions_follow_the_log_and_reveal_late_usage(app: StoreApp) -> None:
    assert app.store.max_notification_id() is None
    first = app.write("n1", meter_increments=[usage("1", T0 + timedelta(minutes=1), "e1")])
    r1 = read(app).revision
    assert r1 == first[-1].notification.id == app.store.max_notification_id()

    app.write("n2", "n3", meter_increments=[usage("1", T0 + timedelta(hours=1), "e2")])
    r2 = read(app).revision
    assert r2 > r1
    assert app.store.changed_buckets("cus_1", "api_calls", [""], r1, DAY_LATER) == [
        T0 + timedelta(hours=1)
    ]

    # Late usage for the first bucket shows up as a change after r2.
    app.write("n4", meter_increments=[usage("1", T0 + timedelta(minutes=5), "e3")])
    assert app.store.changed_buckets("cus_1", "api_calls", [""], r2, DAY_LATER) == [T0]
    # `before` bounds the buckets, and other tags are not looked at.
    assert app.store.changed_buckets("cus_1", "api_calls", [""], 0, T0 + timedelta(hours=1)) == [T0]
    assert app.store.changed_buckets("cus_1", "api_calls", ["ct_9"], 0, DAY_LATER) == []


def test_concurrent_savers_get_revisions_in_commit_order(app: StoreApp) -> None:
    # Every save writes a bucket of its own; its revision must be the highest notification id
    # of that very save, which only holds if no other writer slipped in between.
    expected: dict[datetime, int] = {}
    lock = threading.Lock()

    def saver(worker: int) -> None:
        for i in range(5):
            bucket = T0 + timedelta(minutes=15 * (worker * 5 + i))
            names = [f"w{worker}-{i}-{k}" for k in range(3)]
            recs = app.write(*names, meter_increments=[usage("1", bucket, f"e{worker}-{i}")])
            with lock:
                expected[bucket] = max(r.notification.id for r in recs)

    threads = [threading.Thread(target=saver, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(expected) == 30
    for bucket, revision in expected.items():
        assert read(app, bucket, bucket + timedelta(minutes=15)).revision == revision


# --- atomicity -------------------------------------------------------------------------------


def test_failed_save_writes_no_meters_and_no_contracts(app: StoreApp) -> None:
    app.write(
        "dup",
        meter_increments=[usage("1", T0 + timedelta(minutes=1), "e1")],
        contracts=[("ct_a", "cus_1")],
    )
    with pytest.raises(IntegrityError):
        app.write(
            "dup",
            meter_increments=[usage("100", T0 + timedelta(hours=2), "e2")],
            contracts=[("ct_b", "cus_1")],
        )
    reading = read(app)
    assert (reading.quantity_sum, reading.event_count) == (Decimal(1), 1)
    assert app.store.changed_buckets("cus_1", "api_calls", [""], 0, DAY_LATER) == [T0]
    assert app.store.contract_ids(None, 10) == ["ct_a"]


def test_received_messages_count_once_and_commit_with_the_events(app: StoreApp) -> None:
    app.write("n1", messages=[("m-1", "f1"), ("m-2", "f2")],
              meter_increments=[usage("1", T0 + timedelta(minutes=1), "m-1")])
    assert app.store.received_messages(["m-2", "m-3", "m-1"]) == {"m-1": "f1", "m-2": "f2"}
    assert app.store.received_messages([]) == {}

    # An id received before fails the whole save: events, meters and the other ids.
    with pytest.raises(IntegrityError):
        app.write("n2", messages=[("m-3", "f3"), ("m-1", "f1")],
                  meter_increments=[usage("100", T0 + timedelta(minutes=2), "m-3")])
    with pytest.raises(AggregateNotFoundError):
        app.repository.get(Note.create_id("n2"))
    assert app.store.received_messages(["m-3"]) == {}
    assert read(app).quantity_sum == 1


@pytest.mark.postgres
def test_the_duplicate_check_probes_the_key_whatever_the_table_holds(
        fresh_pg_url: str) -> None:
    """At 100,000 to about 1,000,000 received ids the planner scanned the whole table for
    `message_id = ANY(ids)`; the check must cost one key probe per id at every size."""
    application = StoreApp(env=store_env(fresh_pg_url))
    try:
        recorder = application.store
        assert isinstance(recorder, PostgresBillingRecorder)
        with recorder.datastore.get_connection() as conn, conn.transaction():
            conn.execute(sql.SQL(
                "INSERT INTO {}.received_messages SELECT 'm-' || g, 'f' FROM"
                " generate_series(1, 50000) g").format(sql.Identifier(recorder.datastore.schema)))
            conn.execute("ANALYZE")
        ids = [f"m-{n}" for n in range(40000, 42000)]
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(sql.SQL("EXPLAIN ") + recorder._received_messages, (ids,), binary=True)
            plan = "\n".join(row["QUERY PLAN"] for row in curs.fetchall())
        assert "Index" in plan and "Seq Scan on received_messages" not in plan, plan
        assert len(recorder.received_messages(ids)) == 2000
    finally:
        application.close()


def test_tracking_events_and_meters_commit_together(app: StoreApp) -> None:
    app.write(
        "n1",
        tracking=Tracking("upstream", 5),
        meter_increments=[usage("1", T0 + timedelta(minutes=1), "e1")],
    )
    # The library's tracking recorder reads the same table the saves write.
    tracker = app.factory.tracking_recorder()
    assert tracker.max_tracking_id("upstream") == 5

    # A position already processed is refused, and with it the events and the meters.
    with pytest.raises(IntegrityError):
        app.write(
            "n2",
            tracking=Tracking("upstream", 5),
            meter_increments=[usage("100", T0 + timedelta(minutes=2), "e2")],
        )
    with pytest.raises(AggregateNotFoundError):
        app.repository.get(Note.create_id("n2"))
    assert read(app).quantity_sum == 1

    app.write(
        "n2",
        tracking=Tracking("upstream", 6),
        meter_increments=[usage("100", T0 + timedelta(minutes=2), "e2")],
    )
    assert tracker.max_tracking_id("upstream") == 6
    assert read(app).quantity_sum == 101


def test_a_save_without_events_writes_nothing(app: StoreApp) -> None:
    app.save(
        meter_increments=[usage("1", T0, "e1")],
        contracts=[("ct_a", "cus_1")],
    )
    assert read(app) == MeterReading()
    assert app.store.contract_ids(None, 10) == []


# --- indexes ---------------------------------------------------------------------------------


def test_contract_index_pages_in_order(app: StoreApp) -> None:
    app.write("n1", contracts=[("ct_3", "cus_1"), ("ct_1", "cus_1")])
    # A contract already indexed keeps its customer.
    app.write("n2", contracts=[("ct_2", "cus_2"), ("ct_1", "cus_9")])
    app.write("n3", contracts=[("ct_10", "cus_1")])

    assert app.store.contract_ids(None, 2) == ["ct_1", "ct_10"]
    assert app.store.contract_ids("ct_10", 2) == ["ct_2", "ct_3"]
    assert app.store.contract_ids("ct_3", 2) == []
    assert app.store.customer_contract_ids(["cus_1", "cus_9"]) == {
        "cus_1": ["ct_1", "ct_10", "ct_3"]}


def test_first_versions(app: StoreApp) -> None:
    app.write("a", "b")
    amended: Note = app.repository.get(Note.create_id("a"))
    amended.amend()
    app.save(amended)
    a, b = Note.create_id("a"), Note.create_id("b")

    # Thousands of ids in one call: more than SQLite's variable limit once allowed.
    asked = [a, b, *(uuid4() for _ in range(5000))]
    found = app.store.first_versions(asked)
    assert set(found) == {a, b}
    assert found[a].originator_version == 1
    first = app.mapper.to_domain_event(found[a])
    assert first.originator_version == 1
    assert first.__dict__["name"] == "a"
    assert app.store.first_versions([]) == {}


def test_events_of_many_aggregates_in_one_read(app: StoreApp) -> None:
    app.write("a", "b")
    amended: Note = app.repository.get(Note.create_id("a"))
    amended.amend()
    app.save(amended)
    a, b = Note.create_id("a"), Note.create_id("b")

    found = app.store.events_of([a, b, uuid4()])
    assert {k: [e.originator_version for e in v] for k, v in found.items()} == {
        a: [1, 2], b: [1]}
    assert app.store.events_of([]) == {}


@pytest.mark.postgres
def test_the_log_reads_page_by_page_as_the_library_reads_it(fresh_pg_url: str) -> None:
    # The recorder reads pages of the log with binary results; the library's reader is the
    # reference, for every way a page is asked for.
    app = StoreApp(env=store_env(fresh_pg_url))
    try:
        app.write(*(f"note-{i}" for i in range(12)))
        amended: Note = app.repository.get(Note.create_id("note-3"))
        amended.amend()
        app.save(amended)
        recorder = app.recorder
        assert isinstance(recorder, PostgresBillingRecorder)
        written, changed = "Note.Written", "Note.Amended"  # the classes @event made
        topics = sorted({n.topic for n in recorder.select_notifications(None, 100)})
        amended_topic = next(t for t in topics if t.endswith(changed))
        assert any(t.endswith(written) for t in topics)
        asked: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
            ((None, 100), {}),
            ((1, 5), {}),
            ((4, 5), {"inclusive_of_start": False}),
            ((2, 100), {"stop": 9}),
            ((0, 100), {"topics": [amended_topic]}),
            ((3, 4), {"stop": 13, "topics": topics, "inclusive_of_start": False}),
            ((50, 10), {}),
        ]
        for args, kwargs in asked:
            read = recorder.select_notifications(*args, **kwargs)
            expected = PostgresProcessRecorder.select_notifications(recorder, *args, **kwargs)
            assert read == expected, (args, kwargs)
            assert all(type(n.state) is bytes for n in read)
        assert len(recorder.select_notifications(None, 100)) == 13
    finally:
        app.close()


def test_applications_starting_together_on_a_fresh_postgresql_database(fresh_pg_url: str) -> None:
    # Each process creates the tables; the advisory lock makes them take turns.
    code = (
        "import sys\n"
        "from domain.application import BillingApplication\n"
        "from infra.store.url import store_env\n"
        "BillingApplication(env=store_env(sys.argv[1])).close()\n"
    )
    starters = [
        subprocess.Popen([sys.executable, "-c", code, fresh_pg_url], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for starter in starters:
        _, err = starter.communicate(timeout=120)
        assert starter.returncode == 0, err.decode()
