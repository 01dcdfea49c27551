"""Rejected Kafka records onto the dead-letter topic, after the transaction that rejected them.

The store's dead letters (`billcycle deadletters`) are written in the same transaction as the
partition's position: exactly once. The topic copy can only be sent after that commit; it is
flushed before the partition moves on, and a mark `kafka-deadletter:<topic>:<partition>`
(a tracking record: the offset up to which the topic copy is complete) is written after the
flush. A batch without rejections has nothing to send: its mark waits (`settle`) until the
consumer stops, instead of costing every batch a transaction of its own. When a partition is
assigned and its mark is behind its stored position (after a crash, or taken from another
consumer of the group), the dead letters in between are sent again from the store: after a
clean batch there are none.
So the topic is at least once: consumers dedupe on (source_topic, source_partition,
source_offset), which every dead letter carries in its value and its headers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import IntegrityError, Tracking
from kafka import KafkaProducer, TopicPartition

from consumers.kafka_source import DATABASE_DOWN, KAFKA_DOWN, Patience, process_recorder
from consumers.origins import KAFKA_SOURCE_PREFIX, OFFSET_PREFIX
from domain.application import BillingApplication, dead_letter_record
from domain.commands import Rejected

if TYPE_CHECKING:  # the outbound models cost a consumer's start 0.1 s: imported when used
    from consumers.outbound import DeadLetter

FLUSH_TIMEOUT = 30.0


def deadletter_producer(bootstrap: str, client_id: str = "billcycle-deadletter") -> Any:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        reconnect_backoff_max_ms=5000,
        # Fail a send within the flush timeout, so an outage is retried (and said) promptly.
        delivery_timeout_ms=int(FLUSH_TIMEOUT * 1000),
        request_timeout_ms=10000,
        max_block_ms=int(FLUSH_TIMEOUT * 1000),
    )


def mark_name(tp: TopicPartition) -> str:
    return f"kafka-deadletter:{tp.topic}:{tp.partition}"


class DeadLetterTopic:
    """Sends dead letters to the dead-letter topic, and repairs what a crash kept from it."""

    def __init__(
        self,
        app: BillingApplication,
        producer: Any,
        topic: str,
        patience: Patience,
        *,
        store: str = "the database",
        kafka: str = "Kafka",
    ) -> None:
        self.app = app
        self.producer = producer
        self.topic = topic
        self.patience = patience
        self.store = store
        self.kafka = kafka
        # Per partition, the last offset of a batch published since the last mark, which had
        # no dead letters: complete on the topic, marked by `settle`.
        self._unmarked: dict[TopicPartition, int] = {}

    def publish(
        self,
        tp: TopicPartition,
        rejected: Sequence[Rejected],
        keys: Mapping[str, bytes | None],
        settled_through: int,
    ) -> None:
        """Send a committed batch's rejections (`keys`: the records' keys by position), and
        mark the partition's topic copy complete through the batch's last offset: at once
        after rejections, at `settle` after a batch without any."""
        if not rejected:
            self._unmarked[tp] = settled_through
            return
        entries = [dead_letter_record(r) for r in rejected]
        from consumers.outbound import dead_letter  # its models only when there are letters

        self._send([(dead_letter(e), keys.get(e["at"])) for e in entries])
        self._mark(tp, settled_through)
        self._unmarked.pop(tp, None)

    def settle(self) -> None:
        """Mark every partition complete through its last published batch: the next start
        then finds no gap to repair."""
        while self._unmarked:
            tp, offset = self._unmarked.popitem()
            self._mark(tp, offset)

    def recover(self, stored: Mapping[TopicPartition, int | None]) -> None:
        """Send again the dead letters of newly assigned partitions the topic may lack."""
        recorder = process_recorder(self.app)
        tps = [tp for tp, position in stored.items() if position is not None]
        marks = self.patience.call(
            self.store, lambda: {tp: recorder.max_tracking_id(mark_name(tp)) for tp in tps},
            DATABASE_DOWN)
        gaps: dict[str, tuple[TopicPartition, int, int]] = {}
        for tp in tps:
            mark, position = marks[tp], stored[tp]
            assert position is not None
            if mark is None or mark < position:
                source = f"{KAFKA_SOURCE_PREFIX}{tp.topic}/{tp.partition}"
                gaps[source] = (tp, -1 if mark is None else mark, position)
        if not gaps:
            return
        from consumers.outbound import dead_letter  # its models only when there are letters

        letters = self.patience.call(self.store, self.app.dead_letters, DATABASE_DOWN)
        missing = []
        for entry in letters:
            gap = gaps.get(entry["source"])
            if gap is not None and gap[1] < int(entry["at"].removeprefix(OFFSET_PREFIX)) <= gap[2]:
                missing.append(dead_letter(entry))
        if missing:
            self.patience.say(
                f"sending {len(missing)} dead letters to {self.topic} again: they may not "
                "have reached it before the last stop")
            self._send([(letter, None) for letter in missing])
        for tp, _, position in gaps.values():
            self._mark(tp, position)

    def _send(self, letters: Sequence[tuple[DeadLetter, bytes | None]]) -> None:
        def send() -> None:
            futures = [
                self.producer.send(
                    self.topic,
                    value=letter.model_dump_json().encode(),
                    key=key,
                    headers=[
                        ("source_topic", letter.source_topic.encode()),
                        ("source_partition", str(letter.source_partition).encode()),
                        ("source_offset", str(letter.source_offset).encode()),
                    ],
                )
                for letter, key in letters
            ]
            self.producer.flush(timeout=FLUSH_TIMEOUT)
            for future in futures:
                future.get(timeout=0)  # raises the send's error, or a timeout if it hangs

        self.patience.call(f"{self.kafka} (dead-letter topic {self.topic})", send, KAFKA_DOWN)

    def _mark(self, tp: TopicPartition, offset: int) -> None:
        recorder = process_recorder(self.app)

        def mark() -> None:
            with contextlib.suppress(IntegrityError):  # already marked as far or further
                recorder.insert_tracking(Tracking(mark_name(tp), offset))

        self.patience.call(self.store, mark, DATABASE_DOWN)
