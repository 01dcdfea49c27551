"""Rejected records whose dead letters are larger than the dead-letter topic takes (QA15 H1):
the dead letter goes to the topic cut and marked, the store keeps the record in full, and the
valid records behind it are applied. It used to be retried for ever, its partition stopped,
and a stop then reported a lag of 0."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from consumers.deadletter_topic import DEFAULT_MAX_BYTES, DeadLetterTopic
from consumers.kafka_source import KafkaIngest
from consumers.patience import Stopped
from tests.integration.kafka_support import (
    UsageLedger,
    as_json,
    billcycle_json,
    cli_env,
    meter_totals,
    new_topics,
    produce,
    read_topic,
)
from tests.integration.test_kafka_end_to_end import CrashAfterCommit, consuming_here, validator

# 900 KB that are not UTF-8: 1.2 MB as base64 in a dead letter.
BINARY = bytes(0x80 + i % 120 for i in range(900_000))
# 800 KB of valid JSON, rejected for its quantity, full of characters JSON escapes: 1.6 MB.
ESCAPED = as_json({"type": "usage", "id": "big-bad", "occurred_at": "2026-10-02T00:00:00Z",
                   "customer_id": "cus_0", "metric": "api_calls", "quantity": "-1",
                   "properties": {"note": '"\\' * 200_000}})


def original(letter: dict[str, Any]) -> bytes:
    """The bytes a dead letter's raw holds."""
    if letter["raw_encoding"] == "base64":
        return base64.b64decode(letter["raw"])
    return str(letter["raw"]).encode()


def test_dead_letters_too_large_for_the_topic_are_cut_and_marked_and_the_partition_flows(
    kafka_bootstrap: str, fresh_pg_url: str
) -> None:
    topics = new_topics(kafka_bootstrap)
    env = cli_env(fresh_pg_url, kafka_bootstrap, topics)
    ledger = UsageLedger()
    valid = [value for _, value in ledger.make(customers=1, count=6)]
    # One key, one partition: the two large rejects between valid usage.
    produce(kafka_bootstrap, topics.usage, [
        ("cus_0", value) for value in [*valid[:2], BINARY, ESCAPED, *valid[2:]]])

    consumed = billcycle_json(env, "consume", "--until-caught-up", timeout=150)

    assert (consumed["accepted"], consumed["rejected"]) == (6, 2)
    assert sum(consumed["lag"].values()) == 0
    assert meter_totals(fresh_pg_url, ["cus_0"]) == (ledger.totals, ledger.counts)
    records = read_topic(kafka_bootstrap, topics.deadletter)
    assert len(records) == 2
    for record, whole in zip(records, [BINARY, ESCAPED], strict=True):
        letter = json.loads(record.value)
        validator("deadletter").validate(letter)
        assert len(record.value) + len(record.key or b"") < DEFAULT_MAX_BYTES
        assert letter["raw_truncated"] is True and letter["raw_size"] == len(whole)
        kept = original(letter)
        assert 0 < len(kept) < len(whole) and whole.startswith(kept)
        assert f"the first {len(kept):,} of the record's {len(whole):,} bytes" in letter[
            "raw_note"]
        assert "billcycle deadletters" in letter["raw_note"]
    stored = billcycle_json(env, "deadletters")
    assert [original(d) for d in stored] == [BINARY, ESCAPED]  # in full


def test_a_dead_letter_the_broker_refuses_as_too_large_is_sent_without_the_record(
    kafka_bootstrap: str, fresh_pg_url: str
) -> None:
    # The topic takes less than --deadletter-max-bytes: the broker refuses the letter, and
    # kafka-python's producer is of no use after that; a fresh one sends the letter bare.
    topics = new_topics(kafka_bootstrap)
    small = replace(topics, deadletter=f"{topics.deadletter}.small")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(small.deadletter, 1, 1,
                                      topic_configs={"max.message.bytes": "100000"})])
    finally:
        admin.close()
    env = cli_env(fresh_pg_url, kafka_bootstrap, small)
    ledger = UsageLedger()
    bad = b"\xff" + b"x" * 300_000  # not UTF-8: base64 in its dead letter
    produce(kafka_bootstrap, small.usage, [
        ("cus_0", value) for value in [bad, *(v for _, v in ledger.make(1, 3))]])

    consumed = billcycle_json(env, "consume", "--until-caught-up", timeout=150)

    assert (consumed["accepted"], consumed["rejected"]) == (3, 1)
    assert meter_totals(fresh_pg_url, ["cus_0"]) == (ledger.totals, ledger.counts)
    (record,) = read_topic(kafka_bootstrap, small.deadletter)
    letter = json.loads(record.value)
    validator("deadletter").validate(letter)
    assert (letter["raw"], letter["raw_truncated"], letter["raw_size"]) == ("", True, len(bad))
    assert "refused the message as too large" in letter["raw_note"]
    assert [original(d) for d in billcycle_json(env, "deadletters")] == [bad]


class StoppedWhileRepairing(DeadLetterTopic):
    """Stopped (SIGTERM) while it sends again the dead letters a crash kept from the topic."""

    def recover(self, stored: Any) -> None:
        raise Stopped


def test_a_stop_while_dead_letters_are_repaired_reports_the_records_still_waiting(
    kafka_bootstrap: str, fresh_pg_url: str
) -> None:
    # The repair came before the partition's end offset was learnt: a stop during it (or a
    # repair retried for ever) reported a lag of 0 with records waiting.
    topics = new_topics(kafka_bootstrap)
    ledger = UsageLedger()
    produce(kafka_bootstrap, topics.usage, [("cus_0", b"not json {"), *ledger.make(1, 2)])
    with consuming_here(kafka_bootstrap, fresh_pg_url, "crashed") as (app, consumer, patience):
        crashing = CrashAfterCommit(app, None, topics.deadletter, patience)
        with pytest.raises(RuntimeError, match="crashed after the commit"):
            KafkaIngest(app, consumer, topics, crashing, patience).run(until_caught_up=True)
    produce(kafka_bootstrap, topics.usage, ledger.make(1, 4))
    with consuming_here(kafka_bootstrap, fresh_pg_url, "repairing") as (app, consumer, patience):
        ingest = KafkaIngest(app, consumer, topics,
                             StoppedWhileRepairing(app, None, topics.deadletter, patience),
                             patience)
        ingest.run(until_caught_up=True)
        assert sum(ingest.lag().values()) == 4
