"""`consume --until-caught-up` is caught up only when every record of every inbound partition is
in the store, whichever member of the group owns the partition (QA15 H2: a restart after three
kills owned a third of the partitions, the others held by members killed before it, and said
"lag 0"); stopped before that, it exits 3 (QA15 M3); a Kafka it never reaches fails it (M2).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaProducer, TopicPartition

from consumers.kafka_source import Topics, stored_positions
from domain.application import BillingApplication
from infra.store.url import store_env
from tests.integration.kafka_support import (
    JOIN_WAIT,
    JOINED,
    PARTITIONS,
    UsageLedger,
    as_json,
    billcycle_json,
    cli_env,
    contract,
    kill,
    mentions,
    meter_totals,
    new_topics,
    produce,
    start,
    terminate,
    wait_for,
)

# The member that holds partitions and is then killed: a consumer of the group with a short
# session, so that the test waits 6 s (the broker's least) for the group to drop it.
HOLDER = """
import sys, time
from kafka import KafkaConsumer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from consumers import kafka_join
holder = KafkaConsumer(
    bootstrap_servers=sys.argv[1], group_id=sys.argv[2], enable_auto_commit=False,
    partition_assignment_strategy=(CooperativeStickyAssignor,), session_timeout_ms=6000,
    heartbeat_interval_ms=1000, max_poll_records=1)
kafka_join.install(holder)
holder.subscribe(sys.argv[3:])
said, deadline = False, time.monotonic() + 60
while said or time.monotonic() < deadline:
    holder.poll(timeout_ms=200)
    if holder.assignment() and not said:
        print("holding", flush=True)
        said = True
"""

WAITING = "not all in the store yet, held by other members of group "


def holding_member(bootstrap: str, group: str,
                   topics: tuple[str, ...]) -> subprocess.Popen[bytes]:
    """A member of `group` that owns the partitions of `topics` (consuming nothing to the
    store) until others join it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, bootstrap, group, *topics],
                              stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"holding\n"
    return holder


def waiting_or_gone(log: Path, consumer: subprocess.Popen[bytes]) -> Callable[[], bool]:
    """A check for wait_for: consume names what it waits for, or has stopped."""
    return lambda: mentions(log, WAITING)() or consumer.poll() is not None


def fill(bootstrap: str, topics: Topics, ledger: UsageLedger) -> None:
    produce(bootstrap, topics.contracts, [(f"ct_{n}", as_json(contract(n))) for n in range(6)])
    produce(bootstrap, topics.usage, ledger.make(customers=6, count=600))


def all_in_store(db: str, topics: Topics) -> bool:
    app = BillingApplication(env=store_env(db))
    try:
        tps = [TopicPartition(getattr(topics, name), p)
               for name in ("contracts", "usage") for p in range(PARTITIONS[name])]
        return all(p is not None for p in stored_positions(app, tps).values())
    finally:
        app.close()


def test_until_caught_up_waits_for_the_partitions_of_a_member_killed_while_holding_them(
    kafka_bootstrap: str, fresh_pg_url: str, tmp_path: Path
) -> None:
    topics = new_topics(kafka_bootstrap)
    env = cli_env(fresh_pg_url, kafka_bootstrap, topics)
    ledger = UsageLedger()
    fill(kafka_bootstrap, topics, ledger)
    holder = holding_member(kafka_bootstrap, env["BILLCYCLE_CONSUMER_GROUP"], topics.inbound)
    log = tmp_path / "consume.log"
    try:
        consumer = start(env, "consume", "--until-caught-up", log=str(log))
        # The holder hands over some partitions and keeps the others ...
        wait_for(mentions(log, JOINED), JOIN_WAIT, "the consumer to join", log)
        # ... which consume names while it waits: before the fix it said "lag 0" and exited 0.
        wait_for(waiting_or_gone(log, consumer), 30, "the consumer to name what it waits for",
                 log)
        assert consumer.poll() is None, log.read_text()[-3000:]
    finally:
        kill(holder)  # its partitions come to the consumer once its session times out
    assert consumer.wait(60) == 0, log.read_text()[-3000:]
    assert meter_totals(fresh_pg_url, ledger.totals) == (ledger.totals, ledger.counts)
    assert all_in_store(fresh_pg_url, topics)
    said = log.read_text()
    assert "a live member consumes its partitions, and those of a member that stopped " \
        "answering come to the members left after its session timeout" in said
    assert "in partitions it does not own (" in said


def test_until_caught_up_stopped_before_it_is_exits_3_and_says_what_is_left(
    kafka_bootstrap: str, fresh_pg_url: str, tmp_path: Path
) -> None:
    topics = new_topics(kafka_bootstrap)
    env = cli_env(fresh_pg_url, kafka_bootstrap, topics)
    fill(kafka_bootstrap, topics, UsageLedger())
    holder = holding_member(kafka_bootstrap, env["BILLCYCLE_CONSUMER_GROUP"], topics.inbound)
    log = tmp_path / "consume.log"
    try:
        consumer = start(env, "consume", "--until-caught-up", log=str(log))
        wait_for(waiting_or_gone(log, consumer), JOIN_WAIT, "the consumer to wait for the "
                 "holder", log)
        assert terminate(consumer) == 3  # it was 0, as if caught up
    finally:
        kill(holder)
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("billcycle: stopped before caught up: ")
    assert " records of the inbound topics are not in the store yet (" in last


def test_until_caught_up_gives_up_on_a_kafka_it_never_reaches(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = cli_env(f"sqlite:///{tmp_path / 'b.db'}", f"127.0.0.1:{port}", Topics())
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "consume", "--until-caught-up", "--kafka-wait", "3"],
        env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, time.monotonic() - began < 30) == (1, True), done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"billcycle: Kafka at 127.0.0.1:{port} was not reached within 3 s (KafkaTimeoutError")


def test_records_followed_only_by_transaction_markers_count_as_in_the_store(
    kafka_bootstrap: str, fresh_pg_url: str
) -> None:
    # A transactional producer's commit marker takes an offset that no record is stored at:
    # a partition another member owns, all of whose records are in the store, is caught up.
    topics = new_topics(kafka_bootstrap)
    env = cli_env(fresh_pg_url, kafka_bootstrap, topics)
    ledger = UsageLedger()
    sender = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=topics.usage)
    try:
        sender.init_transactions()
        sender.begin_transaction()
        for key, value in ledger.make(customers=6, count=60):
            sender.send(topics.usage, key=key.encode(), value=value)
        sender.commit_transaction()
    finally:
        sender.close()
    assert billcycle_json(env, "consume", "--until-caught-up")["accepted"] == 60
    # Holding only usage partitions, the holder keeps some of them.
    holder = holding_member(kafka_bootstrap, env["BILLCYCLE_CONSUMER_GROUP"], (topics.usage,))
    try:
        again = billcycle_json(env, "consume", "--until-caught-up", timeout=60)
    finally:
        kill(holder)
    assert (again["caught_up"], again["accepted"], sum(again["lag"].values())) == (True, 0, 0)
    # The holder kept some partitions with records: they were looked into.
    assert any(name.startswith(topics.usage) and again["positions"][name] is not None
               for name in again["not_owned"]), again
