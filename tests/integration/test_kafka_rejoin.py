"""A consumer whose join does not finish leaves its group and joins again, and once the group
lets it in, it consumes everything once.

Here the join is held by another member of the group that has stopped polling: the broker
waits for it to rejoin before the rebalance can end.
"""

from __future__ import annotations

import time
from pathlib import Path

from kafka import KafkaConsumer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor

from consumers import kafka_join
from tests.integration.kafka_support import (
    JOINED,
    UsageLedger,
    cli_env,
    mentions,
    meter_totals,
    new_topics,
    produce,
    start,
    terminate,
    wait_for,
)

REJOINING = "leaving the group and joining it again"


def test_a_consumer_whose_join_is_held_joins_again_and_consumes_everything_once(
    kafka_bootstrap: str, fresh_pg_url: str, tmp_path: Path
) -> None:
    topics = new_topics(kafka_bootstrap)
    env = cli_env(fresh_pg_url, kafka_bootstrap, topics)
    ledger = UsageLedger()
    produce(kafka_bootstrap, topics.usage, ledger.make(customers=4, count=300))

    # A member that takes the partitions and then stops polling: a rebalance must wait for it.
    holder = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=env["BILLCYCLE_CONSUMER_GROUP"],
        enable_auto_commit=False, partition_assignment_strategy=(CooperativeStickyAssignor,),
        max_poll_interval_ms=120_000, session_timeout_ms=10_000, heartbeat_interval_ms=1_000)
    kafka_join.install(holder)  # its brief polls finish every join round (kafka_join.py)
    try:
        holder.subscribe([topics.usage])
        deadline = time.monotonic() + 60
        while not holder.assignment() and time.monotonic() < deadline:
            holder.poll(timeout_ms=200, max_records=1)
        assert holder.assignment(), "the holding member never got its partitions"

        log = tmp_path / "consume.log"
        consumer = start(env, "consume", "--rejoin-after", "4", log=str(log))
        wait_for(mentions(log, REJOINING), 60, "the consumer to give up its held join", log)
        assert not mentions(log, JOINED)()
    finally:
        holder.close()  # leaves the group: the rebalance ends without it

    wait_for(mentions(log, JOINED), 60, "the consumer to join", log)
    wait_for(lambda: meter_totals(fresh_pg_url, ledger.totals)[1] == ledger.counts, 60,
             "the consumer to consume everything")
    assert terminate(consumer) == 0
    assert meter_totals(fresh_pg_url, ledger.totals) == (ledger.totals, ledger.counts)
    text = log.read_text()
    assert "of group " + env["BILLCYCLE_CONSUMER_GROUP"] + " after " in text
