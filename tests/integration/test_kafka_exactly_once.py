"""Exactly-once effect: consumers sharing the partitions, killed with SIGKILL mid-stream and
restarted again and again, still count every usage event once."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from kafka import TopicPartition

from consumers.kafka_source import stored_positions
from domain.application import BillingApplication
from infra.store.url import store_env
from tests.integration.kafka_support import (
    JOIN_WAIT,
    JOINED,
    PARTITIONS,
    UsageLedger,
    billcycle_json,
    cli_env,
    kill,
    mentions,
    meter_totals,
    new_topics,
    produce,
    start,
    wait_for,
)

# Enough that the stream outlasts four kill-and-restart rounds at full consuming speed (24,000
# no longer did once consumers started and read faster).
EVENTS = 48000


def applied(app: BillingApplication, topic: str) -> int:
    """Records applied so far, from the stored positions."""
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS["usage"])]
    return sum(0 if p is None else p + 1 for p in stored_positions(app, tps).values())


def progress_past(app: BillingApplication, topic: str, n: int) -> Callable[[], bool]:
    """A check for wait_for: more than `n` records applied, or all of them."""
    return lambda: (done := applied(app, topic)) > n or done == EVENTS


def test_consumers_killed_mid_stream_and_restarted_count_every_usage_event_once(
    kafka_bootstrap: str, fresh_pg_url: str, tmp_path: Path
) -> None:
    topics = new_topics(kafka_bootstrap)
    env = cli_env(fresh_pg_url, kafka_bootstrap, topics)
    ledger = UsageLedger()
    # The stream comes in five slices, one now and one at each round, so that at least three
    # kills land before its end however fast the consumers are.
    messages = ledger.make(customers=10, count=EVENTS)
    slices = [messages[i::5] for i in range(5)]
    produce(kafka_bootstrap, topics.usage, slices[0])
    app = BillingApplication(env=store_env(fresh_pg_url))
    rng = random.Random(7)
    logs: dict[str, Path] = {}

    def consumer(name: str) -> subprocess.Popen[bytes]:
        logs[name] = tmp_path / f"consume-{len(list(tmp_path.iterdir()))}.log"
        # Small batches: many transactions, so a kill lands between and inside them.
        return start(env, "consume", "--batch-size", "200", "--instance-id", name,
                     log=str(logs[name]))

    consumers = {name: consumer(name) for name in ("c1", "c2")}
    kills_mid_stream = 0
    try:
        # Both members hold partitions before the first kill: a static member killed inside a
        # cooperative rebalance and back at once has left the partitions it was giving up
        # assigned to no one (seen once, with consumers that start fast: a Kafka-side case
        # this test is not about).
        for name in ("c1", "c2"):
            wait_for(mentions(logs[name], "assigned"), 60, f"{name} to join", logs[name])
        for round_ in range(4):
            name = ("c1", "c2")[round_ % 2]
            log = logs[name]
            wait_for(mentions(log, JOINED), JOIN_WAIT, f"{name} to join", log)
            produce(kafka_bootstrap, topics.usage, slices[round_ + 1])
            wait_for(progress_past(app, topics.usage, applied(app, topics.usage) + 200), 60,
                     "the consumers to make progress")
            time.sleep(rng.uniform(0, 0.3))
            kill(consumers[name])
            kills_mid_stream += applied(app, topics.usage) < EVENTS
            consumers[name] = consumer(name)
        for process in consumers.values():
            kill(process)

        # Both come back and finish; each stops once its partitions are at their end.
        finishers = [
            start(env, "consume", "--until-caught-up", "--instance-id", name,
                  log=str(tmp_path / f"finish-{name}.log"))
            for name in ("c1", "c2")
        ]
        assert [p.wait(120) for p in finishers] == [0, 0]
    finally:
        for process in consumers.values():
            if process.poll() is None:
                kill(process)
        app.close()

    assert kills_mid_stream >= 3
    assert meter_totals(fresh_pg_url, ledger.totals) == (ledger.totals, ledger.counts)
    assert applied_again(env) == 0
    text = "".join(log.read_text() for log in tmp_path.iterdir())
    assert text.count("assigned") >= 6


def applied_again(env: dict[str, str]) -> int:
    """What a further consumer finds to do: nothing."""
    return int(billcycle_json(env, "consume", "--until-caught-up", "--group", "another")[
        "accepted"])
