"""Outages during consumption: the broker stopped and restarted, PostgreSQL restarted. The
consumer says what it waits for, retries with backoff, and resumes with nothing lost or doubled.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from infra.kafka_broker import LocalKafka
from infra.postgres import LocalPostgres
from tests.integration.kafka_support import (
    JOIN_WAIT,
    JOINED,
    UsageLedger,
    cli_env,
    mentions,
    meter_totals,
    new_topics,
    producer,
    start,
    terminate,
    wait_for,
)


def test_the_consumer_rides_out_a_broker_restart_and_a_database_restart(
    kafka_broker: LocalKafka, pg_cluster: LocalPostgres, fresh_pg_url: str, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    topics = new_topics(bootstrap)
    ledger = UsageLedger()
    log = tmp_path / "consume.log"
    consumer = start(cli_env(fresh_pg_url, bootstrap, topics), "consume", "--batch-size", "500",
                     log=str(log))
    # Usage keeps arriving all along; the producer's own retries carry it through the outage.
    sender = producer(bootstrap)
    stop = threading.Event()
    failures: list[BaseException] = []

    def produce_steadily() -> None:
        while not stop.is_set():
            futures = [sender.send(topics.usage, key=k.encode(), value=v)
                       for k, v in ledger.make(customers=5, count=100)]
            try:
                sender.flush()
                for future in futures:
                    future.get(timeout=120)
            except Exception as error:
                failures.append(error)
                return
            time.sleep(0.2)

    steady = threading.Thread(target=produce_steadily)
    steady.start()
    try:
        wait_for(mentions(log, JOINED), JOIN_WAIT, "the consumer to join", log)
        wait_for(lambda: sum(meter_totals(fresh_pg_url, ledger.totals)[1].values()) > 0, 60,
                 "the consumer to start consuming")
        # Down longer than the consumer waits before it asks the broker (`probe_after`, 3 s): a
        # broker that stops and starts in less goes unnoticed, as it should.
        kafka_broker.restart(down_for=8)
        wait_for(lambda: log.read_text().count("consumed") >= 3, 60, "consumption to resume")
        stopped_for(pg_cluster, seconds=6)
    finally:
        stop.set()
        steady.join(180)
        sender.close()
    assert failures == []

    wait_for(lambda: meter_totals(fresh_pg_url, ledger.totals)[1] == ledger.counts, 90,
             "the consumer to catch up")
    assert terminate(consumer) == 0

    assert meter_totals(fresh_pg_url, ledger.totals) == (ledger.totals, ledger.counts)
    text = log.read_text()
    assert f"waiting for Kafka at {bootstrap}" in text
    assert "waiting for PostgreSQL at 127.0.0.1" in text
    assert "stopped:" in text  # a clean stop on SIGTERM


def stopped_for(cluster: LocalPostgres, seconds: float) -> None:
    """Stop the server, keeping its data, and start it again after `seconds`."""
    cluster.keep_data = True
    try:
        cluster.stop()
        time.sleep(seconds)
        cluster.start()
    finally:
        cluster.keep_data = False
