"""Kafka in and out on a real broker and PostgreSQL: messages from a plain producer become
invoices, invoice events reach billing.invoices (read by Apache Kafka's own console consumer and
valid by their JSON Schemas), and poison messages land on the dead-letter topic."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from consumers.deadletter_topic import DeadLetterTopic, deadletter_producer, mark_name
from consumers.kafka_source import (
    KafkaIngest,
    inbound_consumer,
    process_recorder,
    stored_positions,
)
from consumers.patience import Patience
from consumers.schemas import SCHEMA_DIR
from domain.application import BillingApplication
from infra.kafka_broker import LocalKafka
from infra.store.url import store_env
from tests.integration.kafka_support import (
    JOIN_WAIT,
    UsageLedger,
    as_json,
    billcycle,
    billcycle_json,
    cli_env,
    contract,
    mentions,
    meter_totals,
    new_topics,
    produce,
    read_topic,
    start,
    terminate,
    wait_for,
)


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    return Draft202012Validator(schema, format_checker=FormatChecker())


def cents(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def test_messages_from_kafka_become_invoices_whose_events_reach_billing_invoices(
    kafka_broker: LocalKafka, fresh_pg_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    topics = new_topics(bootstrap)
    env = cli_env(fresh_pg_url, bootstrap, topics)  # BILLCYCLE_KAFKA set: runs record Kafka
    ledger = UsageLedger()
    produce(bootstrap, topics.contracts, [(f"ct_{n}", as_json(contract(n))) for n in range(3)])
    produce(bootstrap, topics.usage, ledger.make(customers=3, count=300))

    consumed = billcycle_json(env, "consume", "--until-caught-up")
    run = billcycle_json(env, "run", "--cycle-date", "2026-11-01")

    assert (consumed["accepted"], consumed["rejected"]) == (303, 0)
    assert run["counts"]["invoiced"] == 3 and run["warnings"] == []
    manifest = billcycle_json(env, "batch", "show", run["batch_id"])["manifest"]
    for name in ("usage", "contracts", "payments"):
        topic = getattr(topics, name)
        for partition in range(3 if name == "usage" else 2 if name == "contracts" else 1):
            key = f"kafka:{topic}:{partition}"
            end = manifest["kafka_end_offsets"][key]
            assert manifest["input_positions"][key] == (end - 1 if end else None)
            # consume says the same: null where nothing was consumed (it said -1).
            assert consumed["positions"][f"{topic}/{partition}"] == (end - 1 if end else None)
    invoices = {i["customer_id"]: i for i in billcycle_json(env, "invoices")}
    for customer, quantity in ledger.totals.items():
        usage_line = next(line for line in invoices[customer]["lines"] if line["kind"] == "usage")
        assert usage_line["amount"] == cents(quantity * Decimal("0.01"))

    # Usage still in Kafka is named in the next run's warnings.
    produce(bootstrap, topics.usage, ledger.make(customers=3, count=5))
    dry = billcycle_json(env, "run", "--cycle-date", "2026-12-01", "--dry-run")
    assert any(topics.usage in w and "usage still waiting" in w for w in dry["warnings"])
    # A mistyped topic is named, not skipped (QA: a run said nothing of it), with the one
    # setting run has for it (QA: it offered consume's --payments-topic, which run lacks).
    typo = {**env, "BILLCYCLE_TOPIC_PAYMENTS": f"{topics.payments}.typo"}
    said = billcycle_json(typo, "run", "--cycle-date", "2026-12-01", "--dry-run")["warnings"]
    assert any(w.startswith(f"topic {topics.payments}.typo does not exist on Kafka at ")
               and w.endswith("; check the topic's name (env BILLCYCLE_TOPIC_PAYMENTS)")
               for w in said), said

    # Payments from Kafka are applied, one of them beyond what its invoice owed (said on
    # stderr); then everything goes out.
    first, second = invoices["cus_0"], invoices["cus_1"]
    over = str(Decimal(second["total"]) + Decimal("1.00"))
    produce(bootstrap, topics.payments, [
        (customer, as_json({
            "type": "payment.received", "id": pid, "occurred_at": "2026-11-20T09:00:00Z",
            "invoice_number": invoice["number"], "amount": amount, "currency": "USD"}))
        for customer, pid, invoice, amount in (("cus_0", "pay-1", first, first["total"]),
                                               ("cus_1", "pay-2", second, over))])
    paid = billcycle(env, "--json", "consume", "--until-caught-up")
    consumed = json.loads(paid.stdout)
    assert (consumed["accepted"], consumed["notes"]) == (5 + 2, 1)  # usage waiting, payments
    assert (f"payment pay-2 of {over} USD on {second['number']}, which still owed "
            f"{second['total']} USD: 1.00 USD is held as the customer's credit") in paid.stderr
    assert "pay-1" not in paid.stderr
    published = billcycle_json(env, "publish", "--until-caught-up")

    assert published["published"] == 5
    read = subprocess.run(
        kafka_broker.console_consumer_cmd(topics.invoices, max_messages=5, timeout_ms=30000),
        capture_output=True, text=True, timeout=120, check=True)
    messages = [json.loads(line) for line in read.stdout.splitlines() if line.strip()]
    assert sorted(m["type"] for m in messages) == (["invoice.issued"] * 3
                                                   + ["payment.applied"] * 2)
    for message in messages:
        validator(message["type"]).validate(message)
        validator("invoice-event").validate(message)
    assert {m["number"] for m in messages} == {i["number"] for i in invoices.values()}
    balances = {m["number"]: m["balance"] for m in messages if m["type"] == "payment.applied"}
    assert balances == {first["number"]: "0.00", second["number"]: "-1.00"}


POISON: list[tuple[str, bytes]] = [
    ("cus_0", b"not json {"),
    ("cus_0", as_json({"type": "usage", "id": "bad-schema", "customer_id": "cus_0"})),
    ("cus_0", b"\xff\xfe binary"),
    ("cus_0", as_json({"type": "usage", "id": "bad-quantity", "customer_id": "cus_0",
                       "occurred_at": "2026-10-02T00:00:00Z", "metric": "api_calls",
                       "quantity": "-3"})),
]


def test_poison_messages_land_on_the_dead_letter_topic_and_the_valid_ones_behind_them_flow(
    kafka_bootstrap: str, fresh_pg_url: str
) -> None:
    topics = new_topics(kafka_bootstrap)
    env = cli_env(fresh_pg_url, kafka_bootstrap, topics)
    ledger = UsageLedger()
    # All on one partition (one key), the poison first, valid usage behind it.
    produce(kafka_bootstrap, topics.usage, POISON + [
        ("cus_0", value) for _, value in ledger.make(customers=1, count=50)])
    produce(kafka_bootstrap, topics.contracts, [("ct_9", as_json({
        "type": "contract.amended", "id": "amend-unknown", "occurred_at": "2026-10-05T00:00:00Z",
        "contract_id": "ct_9", "effective_date": "2026-10-05",
        "components": [{"id": "platform", "kind": "subscription", "amount": "1.00"}]}))])

    consumed = billcycle_json(env, "consume", "--until-caught-up")

    assert (consumed["accepted"], consumed["rejected"]) == (50, 5)
    assert meter_totals(fresh_pg_url, ["cus_0"]) == (ledger.totals, ledger.counts)
    letters = read_topic(kafka_bootstrap, topics.deadletter)
    by_offset = {}
    for record in letters:
        letter = json.loads(record.value)
        validator("deadletter").validate(letter)
        assert dict(record.headers)["source_offset"] == str(letter["source_offset"]).encode()
        by_offset[(letter["source_topic"], letter["source_offset"])] = letter
    assert len(letters) == 5
    for offset, (_, raw) in enumerate(POISON):
        letter = by_offset[(topics.usage, offset)]
        original = (base64.b64decode(letter["raw"]) if letter["raw_encoding"] == "base64"
                    else letter["raw"].encode())
        assert original == raw and letter["reason"]
    assert "unknown contract ct_9" in by_offset[(topics.contracts, 0)]["reason"]
    assert "not JSON" in by_offset[(topics.usage, 0)]["reason"]
    assert len(billcycle_json(env, "deadletters")) == 5


def test_a_tombstone_and_an_empty_value_are_dead_lettered_with_their_own_reasons(
    kafka_bootstrap: str, fresh_pg_url: str
) -> None:
    # QA F11: a record without a value and one with an empty value gave the same dead letter.
    topics = new_topics(kafka_bootstrap)
    env = cli_env(fresh_pg_url, kafka_bootstrap, topics)
    produce(kafka_bootstrap, topics.usage, [
        ("cus_0", None), ("cus_0", b""), *UsageLedger().make(customers=1, count=3)])

    consumed = billcycle_json(env, "consume", "--until-caught-up")

    assert (consumed["accepted"], consumed["rejected"]) == (3, 2)
    letters = sorted((json.loads(r.value) for r in read_topic(kafka_bootstrap, topics.deadletter)),
                     key=lambda letter: letter["source_offset"])
    for letter in letters:
        validator("deadletter").validate(letter)
    assert [(letter["source_offset"], letter["reason"].partition(":")[0], letter["raw"])
            for letter in letters] == [(0, "tombstone", ""), (1, "empty", "")]
    stored = billcycle_json(env, "deadletters")
    assert sorted(d["reason"] for d in stored) == sorted(letter["reason"] for letter in letters)


@contextmanager
def consuming_here(bootstrap: str, url: str, group: str,
                   **consumer_options: Any) -> Iterator[tuple[BillingApplication, Any, Patience]]:
    """The store, an inbound consumer and a patience that never waits, in this process, for
    the tests that put their own parts into a KafkaIngest; closed afterwards."""
    app = BillingApplication(env=store_env(url))
    try:
        consumer = inbound_consumer(bootstrap, group, **consumer_options)
        try:
            yield app, consumer, Patience(lambda _: None, threading.Event())
        finally:
            consumer.close()
    finally:
        app.close()


class CrashAfterCommit(DeadLetterTopic):
    """Dies between the commit of a batch and sending its dead letters."""

    def publish(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("crashed after the commit")


def test_dead_letters_a_crash_kept_from_the_topic_are_sent_when_the_partition_comes_back(
    kafka_bootstrap: str, fresh_pg_url: str
) -> None:
    topics = new_topics(kafka_bootstrap)
    produce(kafka_bootstrap, topics.usage, POISON[:2] + UsageLedger().make(1, 3))
    with consuming_here(kafka_bootstrap, fresh_pg_url, "crashing") as (app, consumer, patience):
        crashing = CrashAfterCommit(app, None, topics.deadletter, patience)
        with pytest.raises(RuntimeError, match="crashed after the commit"):
            KafkaIngest(app, consumer, topics, crashing, patience).run(until_caught_up=True)
    assert read_topic(kafka_bootstrap, topics.deadletter) == []

    consumed = billcycle_json(cli_env(fresh_pg_url, kafka_bootstrap, topics), "consume",
                              "--until-caught-up")

    assert consumed["records"] == 0  # all applied before the crash
    letters = [json.loads(r.value) for r in read_topic(kafka_bootstrap, topics.deadletter)]
    assert sorted(letter["source_offset"] for letter in letters) == [0, 1]


class CountedMarks(DeadLetterTopic):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks: list[int] = []

    def _mark(self, tp: TopicPartition, offset: int) -> None:
        self.marks.append(offset)
        super()._mark(tp, offset)


def test_only_batches_with_dead_letters_are_marked_at_once_and_a_stop_marks_the_rest(
    kafka_bootstrap: str, fresh_pg_url: str
) -> None:
    topics = new_topics(kafka_bootstrap)
    produce(kafka_bootstrap, topics.usage, POISON[:1] + UsageLedger().make(1, 29))
    with consuming_here(kafka_bootstrap, fresh_pg_url, "marks", batch_size=10) as (
            app, consumer, patience), closing(deadletter_producer(kafka_bootstrap)) as producer:
        deadletters = CountedMarks(app, producer, topics.deadletter, patience)
        KafkaIngest(app, consumer, topics, deadletters, patience, batch_size=10).run(
            until_caught_up=True)
        # One key: one partition. The first batch (the poison at offset 0 in it) is marked
        # after its flush; the clean batches after it (up to offset 29) only at the stop.
        first, last = deadletters.marks
        assert first < 29 and last == 29
        stored = stored_positions(app, [TopicPartition(topics.usage, p) for p in range(3)])
        ((tp, position),) = [(tp, p) for tp, p in stored.items() if p is not None]
        mark = process_recorder(app).max_tracking_id(mark_name(tp))
        assert mark == position == 29  # the next start has no gap to repair
    assert len(read_topic(kafka_bootstrap, topics.deadletter)) == 1


def test_progress_before_any_partition_is_assigned_names_the_group_not_a_lag(
    kafka_bootstrap: str, fresh_pg_url: str
) -> None:
    # A lag of 0 reads as "caught up"; a member still joining (or given no partition) says so.
    topics = new_topics(kafka_bootstrap)
    said: list[str] = []
    with consuming_here(kafka_bootstrap, fresh_pg_url, "joining") as (app, consumer, patience):
        patience.say = said.append
        # Nothing polled yet: nothing is assigned (run() would subscribe and poll).
        KafkaIngest(app, consumer, topics, DeadLetterTopic(app, None, topics.deadletter, patience),
                    patience)._report(force=True)
    assert said[-1].endswith("rejected; no partition assigned to this member of group "
                             "joining yet (finding the group's coordinator or joining)")


def test_a_missing_inbound_topic_is_named_not_created_and_consumed_once_created(
    kafka_bootstrap: str, fresh_pg_url: str, tmp_path: Path
) -> None:
    # QA F10: the broker created a mistyped topic (kafka-python asked it to, whatever the
    # consumer's allow_auto_create_topics) and consume --until-caught-up said caught up.
    topics = new_topics(kafka_bootstrap)
    typo = replace(topics, usage=f"{topics.usage}.typo")
    env = cli_env(fresh_pg_url, kafka_bootstrap, typo)

    done = billcycle(env, "--json", "consume", "--until-caught-up")

    assert json.loads(done.stdout)["missing_topics"] == [typo.usage]
    assert (f"topic {typo.usage} does not exist on Kafka at {kafka_bootstrap}: nothing is "
            "consumed from it until it is created; check its name (--usage-topic or "
            "BILLCYCLE_TOPIC_USAGE)") in done.stderr
    assert "caught up with the inbound topics that exist" in done.stderr
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert typo.usage not in admin.list_topics()

        # A consumer that keeps running takes the topic up once it is created.
        log = tmp_path / "consume.log"
        consumer = start(env, "consume", log=str(log))
        wait_for(mentions(log, f"topic {typo.usage} does not exist"), JOIN_WAIT,
                 "the missing topic named", log)
        admin.create_topics([NewTopic(typo.usage, 2, 1)])
    finally:
        admin.close()
    ledger = UsageLedger()
    produce(kafka_bootstrap, typo.usage, ledger.make(customers=2, count=20))
    wait_for(lambda: meter_totals(fresh_pg_url, ledger.totals) == (ledger.totals, ledger.counts),
             60, "the new topic's usage consumed", log)
    assert terminate(consumer) == 0
    assert f"topic {typo.usage} exists now" in log.read_text()


def test_a_missing_dead_letter_topic_is_named_not_created_and_its_dead_letters_wait_for_it(
    kafka_bootstrap: str, fresh_pg_url: str, tmp_path: Path
) -> None:
    # A mistyped --deadletter-topic: the broker created it (kafka-python's producer asked it
    # to, whatever its allow_auto_create_topics) and the dead letters went where nobody reads.
    topics = new_topics(kafka_bootstrap)
    typo = replace(topics, deadletter=f"{topics.deadletter}.typo")
    env = cli_env(fresh_pg_url, kafka_bootstrap, typo)
    ledger = UsageLedger()
    # One key, one partition: the poison at offsets 0 and 1, valid usage behind it.
    produce(kafka_bootstrap, typo.usage, POISON[:2] + ledger.make(customers=1, count=20))

    done = billcycle(env, "--json", "consume", "--until-caught-up")

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert typo.deadletter not in admin.list_topics()
        # Nothing valid is held up; the dead letters are stored, said, and counted as waiting.
        consumed = json.loads(done.stdout)
        assert (consumed["accepted"], consumed["rejected"]) == (20, 2)
        assert consumed["deadletters_held"] == 2
        assert meter_totals(fresh_pg_url, ["cus_0"]) == (ledger.totals, ledger.counts)
        assert len(billcycle_json(env, "deadletters")) == 2
        assert (f"topic {typo.deadletter} (the dead-letter topic) does not exist on Kafka at "
                f"{kafka_bootstrap}: rejected records are kept as dead letters in the database "
                "(billcycle deadletters) and sent to it once it exists; create it (kafka-topics"
                f".sh --bootstrap-server {kafka_bootstrap} --create --topic {typo.deadletter}) "
                "or correct its name (--deadletter-topic or BILLCYCLE_TOPIC_DEADLETTER)"
                ) in done.stderr

        # A consumer that keeps running keeps the next one waiting too, and sends them all
        # once the topic is created.
        log = tmp_path / "consume.log"
        consumer = start(env, "consume", log=str(log))
        wait_for(mentions(log, "2 dead letters kept in the database only"), JOIN_WAIT,
                 "the first run's dead letters found waiting", log)
        produce(kafka_bootstrap, typo.usage, POISON[2:3])
        wait_for(mentions(log, "3 dead letters kept in the database only"), 30,
                 "the new dead letter waiting", log)
        admin.create_topics([NewTopic(typo.deadletter, 1, 1)])
    finally:
        admin.close()
    wait_for(lambda: len(read_topic(kafka_bootstrap, typo.deadletter)) == 3, 60,
             "the dead letters sent", log, every=2)
    assert terminate(consumer) == 0
    letters = [json.loads(r.value) for r in read_topic(kafka_bootstrap, typo.deadletter)]
    assert sorted(letter["source_offset"] for letter in letters) == [0, 1, 22]
    assert f"topic {typo.deadletter} exists now" in log.read_text()


def test_with_no_inbound_topic_consume_says_first_which_are_missing_and_what_to_do(
    kafka_bootstrap: str, fresh_pg_url: str, tmp_path: Path
) -> None:
    # Every inbound topic mistyped: the progress line said "the group has no partition left for
    # it" (and a line every few seconds "waiting for partitions") before the missing topics.
    topics = new_topics(kafka_bootstrap)
    typo = replace(topics, **{name: f"{getattr(topics, name)}.typo"
                              for name in ("contracts", "usage", "payments")})
    env = cli_env(fresh_pg_url, kafka_bootstrap, typo)
    first = (f"no inbound topic exists on Kafka at {kafka_bootstrap} ({typo.contracts}, "
             f"{typo.usage}, {typo.payments}): nothing is consumed until they are created; "
             "create them or correct their names (--contracts-topic, --usage-topic, "
             "--payments-topic or BILLCYCLE_TOPIC_<NAME>)")

    def said(stderr: str) -> list[str]:
        return [line.partition("billcycle consume: ")[2] for line in stderr.splitlines()]

    # Stopping once caught up, and running until stopped (a progress line every 5 s).
    done = billcycle(env, "consume", "--until-caught-up")
    log = tmp_path / "consume.log"
    consumer = start(env, "consume", log=str(log))
    wait_for(mentions(log, "consumed 0 records"), 30, "a progress line", log)
    assert terminate(consumer) == 0

    for lines in (said(done.stderr), said(log.read_text())):
        for line, topic in zip(lines[:3], typo.inbound, strict=True):
            assert line.startswith(f"topic {topic} does not exist on Kafka at {kafka_bootstrap}: "
                                   "nothing is consumed from it until it is created"), lines
        progress = [line for line in lines if "consumed 0 records" in line]
        assert progress and all(line.startswith(f"{first}; consumed 0 records")
                                for line in progress), progress
        assert not any("partition" in line for line in lines), lines
    assert f"stopping: {first}" in said(done.stderr)
