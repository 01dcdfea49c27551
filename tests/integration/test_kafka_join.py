"""A consumer polling with short timeouts finishes every join round it starts.

kafka-python 3.0.12 left a leader's round unfinished when the topic metadata that set it off
was taken up by the round itself (consumers/kafka_join.py): the member stayed `rebalancing`
for good, its heartbeats stopped. Partitions added to a subscribed topic set that off in 3 of
5 tries without the fix (the library's fetch settings, polls of 50 ms as `consume` makes them
before it owns partitions); each try here must end with the member owning them all.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewPartitions, NewTopic
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.structs import MemberState

from consumers import kafka_join
from consumers.kafka_source import inbound_consumer


def test_a_leader_takes_up_partitions_added_while_it_polls_briefly(kafka_bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        for _ in range(3):
            topic = f"j{uuid.uuid4().hex[:8]}"
            admin.create_topics([NewTopic(topic, 1, 1)])
            consumer = KafkaConsumer(
                bootstrap_servers=kafka_bootstrap, group_id=topic, enable_auto_commit=False,
                partition_assignment_strategy=(CooperativeStickyAssignor,),
                metadata_max_age_ms=200)  # the new partitions are seen at once
            assert kafka_join.install(consumer)
            try:
                consumer.subscribe([topic])
                assert owns(consumer, 1), "the first join did not finish"
                admin.create_partitions({topic: NewPartitions(total_count=4)})
                assert owns(consumer, 4), (
                    f"still {consumer.group_metadata().state} with "
                    f"{len(consumer.assignment())} partition(s)")
                assert consumer.group_metadata().state == MemberState.STABLE
            finally:
                consumer.close(timeout_ms=3000)
    finally:
        admin.close()


def test_consume_s_consumer_has_the_fix(kafka_bootstrap: str) -> None:
    consumer = inbound_consumer(kafka_bootstrap, group=f"j{uuid.uuid4().hex[:8]}")
    try:
        assert kafka_join.installed(consumer)
    finally:
        consumer.close(timeout_ms=3000)


def owns(consumer: Any, partitions: int, within: float = 20.0) -> bool:
    """Poll 50 ms at a time until the consumer owns this many partitions."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        consumer.poll(timeout_ms=50)
        if len(consumer.assignment()) == partitions:
            return True
    return False
