"""Smoke tests of the local PostgreSQL cluster and Kafka broker the other tests run on."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer

from infra.kafka_broker import LocalKafka, new_cluster_id
from infra.launcher import ServiceError
from infra.postgres import LocalPostgres, with_database


def read_values(bootstrap: str, topic: str, expected: int, **config: object) -> list[bytes]:
    """Values on `topic` from the beginning, once `expected` arrived or after 15 s."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
        **config,
    )
    values: list[bytes] = []
    try:
        for message in consumer:
            values.append(message.value)
            if len(values) == expected:
                break
    finally:
        consumer.close()
    return values


def produce(bootstrap: str, topic: str, *values: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in values:
        producer.send(topic, key=b"k", value=value)
    producer.flush()
    producer.close()


def topic_name() -> str:
    return f"infra-test-{uuid.uuid4().hex[:8]}"


# PostgreSQL


def test_postgres_answers_queries(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT current_database(), 1 + 1").fetchone()
    assert row is not None and row[1] == 2


def test_fresh_databases_are_empty_and_separate(fresh_pg_url: str, postgres_url: str) -> None:
    with psycopg.connect(fresh_pg_url) as conn:
        conn.execute("CREATE TABLE only_here (n int)")
    with psycopg.connect(postgres_url) as conn:
        found = conn.execute("SELECT to_regclass('only_here')").fetchone()
    assert found == (None,)


def test_postgres_keeps_data_across_restart_and_crash(pg_cluster: LocalPostgres) -> None:
    table = f"restart_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.url) as conn:
        conn.execute(f"CREATE TABLE {table} (n int)")
        conn.execute(f"INSERT INTO {table} VALUES (1)")

    pg_cluster.restart()
    with psycopg.connect(pg_cluster.url) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (2)")

    # An immediate shutdown skips the checkpoint: the restart runs crash recovery.
    pg_cluster.restart("immediate")
    with psycopg.connect(pg_cluster.url) as conn:
        rows = conn.execute(f"SELECT n FROM {table} ORDER BY n").fetchall()
    assert rows == [(1,), (2,)]


def test_postgres_stop_deletes_its_files() -> None:
    base = Path(tempfile.mkdtemp(prefix="billcycle-pg-"))
    with LocalPostgres(base, fast=True) as cluster:
        assert cluster.is_running()
        assert cluster.url.endswith(f":{cluster.port}/billcycle")
    assert not base.exists()


def test_postgres_names_missing_binaries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BILLCYCLE_PG_BIN", str(tmp_path / "nowhere"))
    with pytest.raises(ServiceError, match="BILLCYCLE_PG_BIN"):
        LocalPostgres(tmp_path / "pg").start()


def test_with_database_keeps_the_server() -> None:
    url = "postgresql://postgres@127.0.0.1:5555/billcycle?sslmode=disable"
    assert with_database(url, "t_1") == "postgresql://postgres@127.0.0.1:5555/t_1?sslmode=disable"


# Kafka


def test_transactional_produce_is_read_committed(kafka_bootstrap: str) -> None:
    topic = topic_name()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"infra-{topic}")
    producer.init_transactions()
    for value, commit in ((b"first", True), (b"aborted", False), (b"second", True)):
        producer.begin_transaction()
        producer.send(topic, key=b"k", value=value)
        if commit:
            producer.commit_transaction()
        else:
            producer.flush()
            producer.abort_transaction()
    producer.close()

    committed = read_values(kafka_bootstrap, topic, 2, isolation_level="read_committed")
    everything = read_values(kafka_bootstrap, topic, 3, isolation_level="read_uncommitted")

    assert committed == [b"first", b"second"]
    assert everything == [b"first", b"aborted", b"second"]


def test_console_consumer_prints_messages(kafka_broker: LocalKafka) -> None:
    topic = topic_name()
    produce(kafka_broker.bootstrap, topic, b'{"id": "m-1"}', b'{"id": "m-2"}')

    done = subprocess.run(
        kafka_broker.console_consumer_cmd(topic, max_messages=2),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['{"id": "m-1"}', '{"id": "m-2"}']


def test_kafka_keeps_data_across_restart_and_kill(kafka_broker: LocalKafka) -> None:
    topic = topic_name()
    produce(kafka_broker.bootstrap, topic, b"before restart")

    kafka_broker.restart()
    produce(kafka_broker.bootstrap, topic, b"before kill")
    kafka_broker.restart(hard=True)

    assert read_values(kafka_broker.bootstrap, topic, 2) == [b"before restart", b"before kill"]


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_dev_services_create_billcycles_topics_once(kafka_bootstrap: str) -> None:
    from kafka.admin import KafkaAdminClient

    from consumers.kafka_source import Topics
    from infra.services import create_topics

    create_topics(kafka_bootstrap)  # those another test's call left are kept

    assert create_topics(kafka_bootstrap) == []
    topics = Topics()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert {*topics.inbound, topics.invoices, topics.deadletter} <= set(admin.list_topics())
    finally:
        admin.close()
