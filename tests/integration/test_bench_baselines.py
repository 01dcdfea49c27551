"""The bench's raw-limit baselines store what they claim to: the bare exactly-once consumer
each message id once with the partitions' offsets, the bare view rows the replay's rows,
tables and indexes exactly, and the replay floor one row for every event the replay reads.
Their speed is the bench's business (bench/run.py), never a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from bench.baselines import (
    FLOOR_SCHEMA,
    VIEW_ROWS_SCHEMA,
    empty_copies,
    exactly_once,
    prepare_replay_floor,
    prepare_view_rows,
    replay_floor,
    view_rows,
)
from bench.ingest_whatif import NO_FOLD, TOPIC_ROLES, documents
from bench.run import REPO, child_env, count_usage_records, metered_usage
from domain.application import BillingApplication
from infra.store.url import store_env
from projections.runner import PROJECTIONS, Projections
from tests.integration.kafka_support import produce
from tests.integration.test_projections import billing_history


def usage(n: int) -> bytes:
    return json.dumps({"type": "usage", "id": f"evt-{n}", "occurred_at": "2026-11-03T10:00:00Z",
                       "customer_id": f"cus_{n % 3}", "metric": "api_calls",
                       "quantity": f"{n}.5", "properties": {}}).encode()


@pytest.mark.parametrize("writer_thread", [False, True])
def test_the_bare_exactly_once_consumer_stores_each_id_once_with_its_offsets(
    kafka_bootstrap: str, fresh_pg_url: str, writer_thread: bool
) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.usage"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    # Resent messages: one next to its first copy, one at the start of the next batch of 4.
    values = [usage(n) for n in range(10)]
    values[4:4] = [values[3]]
    values[2:2] = [values[1]]
    sent = produce(kafka_bootstrap, topic, [("k", v) for v in values])

    result = exactly_once(fresh_pg_url, kafka_bootstrap, topic, 4, writer_thread)

    assert result["records"] == sent == 12
    assert result["stored"] == 10
    assert result["batches_redone"] <= 1  # only the resend that starts a batch
    with psycopg.connect(fresh_pg_url) as conn:
        rows = conn.execute("SELECT message_id, quantity, value FROM bare_usage").fetchall()
        offsets = conn.execute("SELECT topic, partition, last_offset FROM bare_offsets").fetchall()
    assert sorted(rows) == sorted((f"evt-{n}", Decimal(f"{n}.5"), usage(n)) for n in range(10))
    assert offsets == [(topic, 0, 11)]
    # Positions come from the database: run again, nothing is read twice.
    again = exactly_once(fresh_pg_url, kafka_bootstrap, topic, 4, writer_thread)
    assert (again["records"], again["stored"]) == (0, 10)


@pytest.fixture
def replayed(fresh_pg_url: str) -> Iterator[str]:
    app = BillingApplication(env=store_env(fresh_pg_url))
    try:
        billing_history(app)
        Projections(app).replay()
    finally:
        app.close()
    yield fresh_pg_url


def _tables(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    found = {}
    for projection in PROJECTIONS.values():
        for table in projection.tables:
            rows = conn.execute(
                f"SELECT * FROM {schema}.{table.name} ORDER BY {', '.join(table.key)}").fetchall()
            indexes = conn.execute(
                "SELECT indexdef LIKE 'CREATE UNIQUE %%', regexp_replace(indexdef, '^.* USING ',"
                " '') FROM pg_indexes"
                " WHERE schemaname = %s AND tablename = %s ORDER BY 1, 2",
                (schema, table.name)).fetchall()
            found[table.name] = (rows, indexes)
    return found


@pytest.mark.parametrize("connections", [1, 2])
def test_the_bare_view_rows_write_the_replays_rows_tables_and_indexes(
    replayed: str, tmp_path: Path, connections: int
) -> None:
    manifest = prepare_view_rows(replayed, tmp_path, pages=3)
    with psycopg.connect(replayed) as conn:
        (schema,) = conn.execute("SELECT current_schema()").fetchone() or ("",)
        assert all(not rows for rows, _ in _tables(conn, VIEW_ROWS_SCHEMA).values())

    result = view_rows(replayed, manifest, connections)

    assert len(manifest["transactions"]) == 3 * len(PROJECTIONS)
    assert result["records"] == manifest["rows"] > 0
    with psycopg.connect(replayed) as conn:
        original, copied = _tables(conn, schema), _tables(conn, VIEW_ROWS_SCHEMA)
    assert copied == original
    assert all(any(unique for unique, _ in indexes) for _, indexes in copied.values())
    assert sum(len(rows) for rows, _ in copied.values()) == manifest["rows"]
    # Made empty again for another run.
    empty_copies(replayed)
    with psycopg.connect(replayed) as conn:
        assert all(not rows for rows, _ in _tables(conn, VIEW_ROWS_SCHEMA).values())


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_the_replay_floor_writes_one_row_for_every_event_the_replay_reads(
    replayed: str, processes: int
) -> None:
    topics = sorted({t for cls in PROJECTIONS.values() for t in cls.topics})
    with psycopg.connect(replayed) as conn:
        expected = conn.execute(
            "SELECT notification_id, topic FROM billcycle_events"
            " WHERE topic = ANY(%s) ORDER BY notification_id", (topics,)).fetchall()

    bounds = prepare_replay_floor(replayed, topics, processes)
    result = replay_floor(replayed, topics, bounds)

    assert len(bounds) == processes + 1 and bounds == sorted(bounds)
    assert result["processes"] == processes
    assert result["records"] == len(expected) > 0
    with psycopg.connect(replayed) as conn:
        rows = conn.execute(f"SELECT * FROM {FLOOR_SCHEMA}.rows ORDER BY position").fetchall()
        tracked = conn.execute(f"SELECT share, notification_id FROM {FLOOR_SCHEMA}.tracking"
                               " ORDER BY share").fetchall()
    assert rows == expected  # each event once, whichever interpreter read it
    assert [share for share, _ in tracked] == [s["share"] for s in result["shares"]
                                               if s["records"]]
    assert all(bounds[k] < at <= bounds[k + 1] for k, at in tracked)


def test_the_ingest_whatif_without_the_fold_stores_every_record_and_leaves_the_meters_to_billing(
    kafka_bootstrap: str, fresh_pg_url: str
) -> None:
    topics = {role: f"w{uuid.uuid4().hex[:8]}.{role}" for role in TOPIC_ROLES}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1) for topic in topics.values()])
    finally:
        admin.close()
    produce(kafka_bootstrap, topics["usage"], [("k", usage(n)) for n in range(6)])
    env = {**child_env(), **{f"BILLCYCLE_TOPIC_{role.upper()}": topic
                             for role, topic in topics.items()}}

    done = subprocess.run(
        [sys.executable, "-c", NO_FOLD, "--db", fresh_pg_url, "--json", "consume",
         "--bootstrap", kafka_bootstrap, "--group", "whatif", "--until-caught-up"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)

    assert [doc["accepted"] for doc in documents(done.stdout + done.stdout)] == [6, 6]
    assert count_usage_records(fresh_pg_url) == 6
    metered, backlog = metered_usage(fresh_pg_url)
    assert (metered, backlog) == (0, 1)  # the billing run folds it before it reads
