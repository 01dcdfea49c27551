"""The consumer's progress line before it owns a partition says where its group join stands,
a join stuck for a minute is given up and started again by a fresh consumer, and an inbound
topic or the dead-letter topic that does not exist is named until it does, while kafka-python
is made to ask the broker about it less and less often."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field, fields
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.structs import ConsumerGroupMetadata, MemberState

from consumers.deadletter_topic import DeadLetterTopic
from consumers.kafka_source import (
    METADATA_BACKOFF_MS,
    REJOIN_AFTER,
    SLOW_JOIN,
    WAITING_FOR_MEMBERS,
    KafkaIngest,
    Topics,
)
from consumers.patience import Patience
from domain.application import BillingApplication
from infra.store.url import store_env


@dataclass
class MemberOfGroup:
    """A consumer as the progress line sees it: its group membership, no partition."""

    member: ConsumerGroupMetadata
    config: dict[str, Any] = field(default_factory=dict)

    closed: bool = False
    subscribed: list[str] = field(default_factory=list)
    # The topics on the broker: by default, every one of contract.md's.
    on_broker: set[str] = field(
        default_factory=lambda: {getattr(Topics(), f.name) for f in fields(Topics)})
    # kafka-python's cluster metadata, as far as the consumer sets it.
    _cluster: SimpleNamespace = field(
        default_factory=lambda: SimpleNamespace(config={"retry_backoff_ms": 100}))
    # The topics whose partitions were asked for.
    asked: list[str] = field(default_factory=list)

    def group_metadata(self) -> ConsumerGroupMetadata:
        return self.member

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        self.closed = True

    def subscribe(self, topics: list[str], listener: object = None) -> None:
        self.subscribed = topics

    def topics(self) -> set[str]:
        return set(self.on_broker)

    def assignment(self) -> set[object]:
        return set()

    def partitions_for_topic(self, topic: str) -> set[int]:
        self.asked.append(topic)
        return set()


def member(state: str, generation: int = -1) -> MemberOfGroup:
    return MemberOfGroup(ConsumerGroupMetadata("billcycle", generation, "m-1", None, state))


def kafka_ingest(app: BillingApplication, consumer: MemberOfGroup, said: list[str],
                 topics: Topics | None = None, **options: Any) -> KafkaIngest:
    """A KafkaIngest of `consumer` (of contract.md's topics unless `topics`) that says into
    `said`, and sends no dead letter."""
    topics = topics or Topics()
    patience = Patience(said.append, threading.Event())
    return KafkaIngest(app, consumer, topics,
                       DeadLetterTopic(app, None, topics.deadletter, patience), patience,
                       **options)


@pytest.fixture
def app() -> Iterator[BillingApplication]:
    with closing(BillingApplication(env=store_env("sqlite:///:memory:"))) as application:
        yield application


def progress(app: BillingApplication, state: str, generation: int = -1,
             waited: float = 0.0) -> str:
    said: list[str] = []
    ingest = kafka_ingest(app, member(state, generation), said)
    ingest._joining_since -= waited
    ingest._report(force=True)
    return said[-1].partition("rejected; ")[2]


def test_a_member_not_in_its_group_yet_says_it_is_joining(app: BillingApplication) -> None:
    assert progress(app, MemberState.UNJOINED) == (
        "no partition assigned to this member of group billcycle yet (finding the group's "
        "coordinator or joining)")
    assert progress(app, MemberState.REBALANCING) == (
        "no partition assigned to this member of group billcycle yet (rebalancing)")


def test_a_join_that_takes_long_says_how_long_and_where_to_look(app: BillingApplication) -> None:
    assert progress(app, MemberState.UNJOINED, waited=SLOW_JOIN + 5) == (
        "no partition assigned to this member of group billcycle yet (finding the group's "
        f"coordinator or joining, for {SLOW_JOIN + 5:,.0f} s where a join takes a second or "
        "two: see what the broker's log says of group billcycle)")


def test_a_rebalance_held_for_seconds_names_members_gone_and_suggests_an_instance_id(
    app: BillingApplication,
) -> None:
    assert progress(app, MemberState.REBALANCING, waited=WAITING_FOR_MEMBERS + 1) == (
        f"no partition assigned to this member of group billcycle yet (rebalancing, for "
        f"{WAITING_FOR_MEMBERS + 1:,.0f} s; the group is likely waiting for members that "
        "stopped answering (a consumer killed, or stopped without leaving the group): each is "
        "dropped up to the session timeout (15 s) after it last answered, and each restart "
        "before then leaves one more; give each consumer its own --instance-id (static "
        "membership, docs/kafka.md): one restarted under its id takes its place at once)")


def test_a_static_member_held_in_a_rebalance_is_told_why_but_not_to_be_static(
    app: BillingApplication,
) -> None:
    said: list[str] = []
    static = member(MemberState.REBALANCING)
    static.config.update(group_instance_id="pod-1", session_timeout_ms=20000)
    ingest = kafka_ingest(app, static, said)
    ingest._joining_since -= SLOW_JOIN + 1
    ingest._report(force=True)

    line = said[-1]
    assert f"rebalancing, for {SLOW_JOIN + 1:,.0f} s where a join takes a second or two" in line
    assert "waiting for members that stopped answering" in line
    assert "session timeout (20 s)" in line
    assert "--instance-id" not in line


def test_a_member_its_group_gave_nothing_says_so(app: BillingApplication) -> None:
    # More members than partitions: this one is in the group, with nothing to consume.
    assert progress(app, MemberState.STABLE, generation=4) == (
        "no partition assigned to this member of group billcycle (generation 4): the group "
        "has no partition left for it")


def joining_for(app: BillingApplication, seconds: float, state: str,
                said: list[str]) -> tuple[KafkaIngest, MemberOfGroup]:
    stuck = member(state)
    ingest = kafka_ingest(app, stuck, said, fresh_consumer=lambda: member(MemberState.UNJOINED))
    ingest._joining_since -= seconds
    return ingest, stuck


def test_a_join_stuck_for_a_minute_is_left_and_started_again(app: BillingApplication) -> None:
    said: list[str] = []
    ingest, stuck = joining_for(app, REJOIN_AFTER + 1, MemberState.REBALANCING, said)
    ingest._rejoin_if_stuck()
    assert stuck.closed
    fresh = ingest.consumer
    assert fresh is not stuck and fresh.subscribed == list(Topics().inbound)
    assert said == [
        f"no partition assigned to this member of group billcycle after {REJOIN_AFTER + 1:,.0f}"
        " s of joining: leaving the group and joining it again"]
    ingest._rejoin_if_stuck()  # the fresh consumer has its own minute
    assert ingest.consumer is fresh


@pytest.mark.parametrize("state, waited", [
    (MemberState.REBALANCING, REJOIN_AFTER - 5),  # not stuck yet
    (MemberState.STABLE, REJOIN_AFTER + 60),  # joined; its group has nothing for it
])
def test_a_member_still_in_time_or_in_its_group_is_kept(
    app: BillingApplication, state: str, waited: float
) -> None:
    said: list[str] = []
    ingest, stuck = joining_for(app, waited, state, said)
    ingest._rejoin_if_stuck()
    assert ingest.consumer is stuck and not stuck.closed and said == []


def test_a_rebalance_of_a_member_long_in_its_group_is_timed_from_when_it_was_last_seen_there(
    app: BillingApplication
) -> None:
    # An idle member (more members than partitions) for long; then its group rebalances.
    said: list[str] = []
    ingest, member_of_group = joining_for(app, REJOIN_AFTER + 600, MemberState.STABLE, said)
    ingest._rejoin_if_stuck()
    member_of_group.member = member_of_group.member._replace(state=MemberState.REBALANCING)
    ingest._rejoin_if_stuck()
    assert ingest.consumer is member_of_group and said == []
    ingest._joining_since -= REJOIN_AFTER  # ... and the rebalance does not end
    ingest._rejoin_if_stuck()
    assert ingest.consumer is not member_of_group and member_of_group.closed


def test_an_inbound_topic_that_does_not_exist_is_named_until_it_does(
    app: BillingApplication,
) -> None:
    said: list[str] = []
    consumer = member(MemberState.STABLE, generation=2)
    ingest = kafka_ingest(app, consumer, said, Topics(usage="billing.usage.typo"))
    ingest._check_topics()
    ingest._check_topics()  # said once, not at every check
    ingest._report(force=True)
    assert said == [
        "topic billing.usage.typo does not exist on Kafka: nothing is consumed from it until "
        "it is created; check its name (--usage-topic or BILLCYCLE_TOPIC_USAGE)",
        "consumed 0 records (0/s lately): 0 accepted, 0 duplicates, 0 rejected; no partition "
        "assigned to this member of group billcycle (generation 2): the group has no partition "
        "left for it; topic billing.usage.typo does not exist on Kafka"]
    consumer.on_broker.add("billing.usage.typo")  # created
    ingest._check_topics()
    assert said[-1] == "topic billing.usage.typo exists now" and ingest.missing == []


def test_while_an_inbound_topic_is_missing_kafka_python_asks_for_it_less_and_less_often(
    app: BillingApplication,
) -> None:
    # kafka-python retried a missing subscribed topic's metadata 10 times a second.
    said: list[str] = []
    consumer = member(MemberState.STABLE, generation=2)
    ingest = kafka_ingest(app, consumer, said, Topics(usage="billing.usage.typo"))

    def backoff() -> int:
        return int(consumer._cluster.config["retry_backoff_ms"])

    ingest._subscribe()
    assert backoff() == METADATA_BACKOFF_MS
    pauses = []
    for _ in range(6):
        ingest._check_topics()
        pauses.append(backoff())
    assert pauses == [500, 1000, 2000, 3000, 3000, 3000]
    ingest._probe()  # the missing topic's partitions are not asked for (a question to the broker)
    assert consumer.asked == ["billing.contracts", "billing.payments"]

    consumer.on_broker.add("billing.usage.typo")  # created: back to kafka-python's own pace
    ingest._check_topics()
    assert backoff() == METADATA_BACKOFF_MS and said[-1] == "topic billing.usage.typo exists now"


def test_with_no_inbound_topic_the_progress_line_says_that_first_not_the_group_state(
    app: BillingApplication,
) -> None:
    said: list[str] = []
    consumer = member(MemberState.STABLE, generation=2)
    consumer.on_broker = {"billing.deadletter"}
    ingest = kafka_ingest(app, consumer, said)
    ingest._check_topics()
    ingest._report(force=True)
    assert said[-1] == (
        "no inbound topic exists on Kafka (billing.contracts, billing.usage, billing.payments): "
        "nothing is consumed until they are created; create them or correct their names "
        "(--contracts-topic, --usage-topic, --payments-topic or BILLCYCLE_TOPIC_<NAME>); "
        "consumed 0 records (0/s lately): 0 accepted, 0 duplicates, 0 rejected")


def test_a_dead_letter_topic_that_does_not_exist_is_named_until_it_does(
    app: BillingApplication,
) -> None:
    said: list[str] = []
    consumer = member(MemberState.STABLE, generation=2)
    consumer.on_broker.remove("billing.deadletter")
    ingest = kafka_ingest(app, consumer, said)
    ingest._check_topics()
    ingest._check_topics()  # said once, not at every check
    ingest._report(force=True)
    assert said == [
        "topic billing.deadletter (the dead-letter topic) does not exist on Kafka: rejected "
        "records are kept as dead letters in the database (billcycle deadletters) and sent to it "
        "once it exists; create it (kafka-topics.sh --bootstrap-server HOST:PORT --create "
        "--topic billing.deadletter) or correct its name (--deadletter-topic or "
        "BILLCYCLE_TOPIC_DEADLETTER)",
        "consumed 0 records (0/s lately): 0 accepted, 0 duplicates, 0 rejected; no partition "
        "assigned to this member of group billcycle (generation 2): the group has no partition "
        "left for it; the dead-letter topic billing.deadletter does not exist on Kafka"]
    consumer.on_broker.add("billing.deadletter")  # created: nothing was held for it
    ingest._check_topics()
    assert said[-1] == "topic billing.deadletter exists now" and not ingest.deadletters.missing
